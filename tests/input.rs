//! Bad input gets a clear 4xx, never a 5xx; user input never reaches a shell;
//! file paths cannot leave their job.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{Kumulus, Options, Repo};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn post_raw(k: &Kumulus, token: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let resp = k
        .http
        .post(k.url("/api/jobs"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn bad_submissions_get_the_right_4xx() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;

    for body in ["{not json", "", "[1,", "{\"url\": }"] {
        let (status, value) = post_raw(&k, &token, body.to_string()).await;
        assert_error(status, &value, StatusCode::BAD_REQUEST, "bad_request");
    }
    let invalid = [
        json!({}),
        json!({"url": 5}),
        json!({"url": "https://example.com/r.git", "args": {"a": 1}}),
        json!({"url": "https://example.com/r.git", "args": [1, 2]}),
        json!({"url": "https://example.com/r.git", "config": true}),
        json!({"url": "https://example.com/r.git", "timeout_secs": -1}),
        json!({"url": "https://example.com/r.git", "timeout_secs": 100000}),
        json!({"url": "https://example.com/r.git", "timeout_secs": "ten"}),
        json!({"url": "https://example.com/r.git", "surprise": 1}),
        json!("just a string"),
        json!({"url": "ftp://example.com/r.git"}),
        json!({"url": "relative/path"}),
        json!({"url": "-uevil"}),
        json!({"url": "--upload-pack=touch /tmp/kumulus-pwned"}),
        json!({"url": "ext::sh -c touch% /tmp/kumulus-pwned"}),
        json!({"url": "https://example.com/r.git", "limits": {"memory_mb": 1_000_000}}),
        json!({"url": "https://example.com/r.git", "limits": {"cpus": 0}}),
        json!({"url": "https://example.com/r.git", "limits": {"disk": 1}}),
        json!({"url": "https://example.com/r.git", "limits": [1]}),
    ];
    for body in invalid {
        let (status, value) = post_raw(&k, &token, body.to_string()).await;
        assert_error(
            status,
            &value,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        );
    }
    let (status, value) = post_raw(&k, &token, json!({"args": "x"}).to_string()).await;
    assert!(
        value["error"]["message"].as_str().unwrap().contains("url"),
        "{value}"
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let huge = format!(
        "{{\"url\": \"/x\", \"config\": \"{}\"}}",
        "a".repeat(10 * 1024 * 1024)
    );
    let (status, value) = post_raw(&k, &token, huge).await;
    assert_error(
        status,
        &value,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    // Nothing was accepted.
    let (_, list) = k.json(Method::GET, "/api/jobs", &token, None).await;
    assert_eq!(list["jobs"], json!([]));
}

#[tokio::test]
async fn bad_queries_ids_and_tokens_get_the_right_4xx() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let unknown = "01900000-0000-7000-8000-000000000000";
    for path in [
        format!("/api/jobs/{unknown}"),
        "/api/jobs/not-an-id".to_string(),
        format!("/api/jobs/{unknown}/files"),
        format!("/api/status/{unknown}"),
        "/api/nothing-here".to_string(),
    ] {
        let (status, body) = k.json(Method::GET, &path, &token, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    for query in [
        "limit=0",
        "limit=1000",
        "limit=x",
        "state=done",
        "cursor=abc",
        "colour=red",
    ] {
        let (status, body) = k
            .json(Method::GET, &format!("/api/jobs?{query}"), &token, None)
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        );
    }

    // Tokens: none, garbled, signed with another key, expired, unsigned.
    let resp = k.http.get(k.url("/api/jobs")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |exp: u64| json!({"sub": "ana", "iss": "kumulus", "aud": "kumulus-api", "iat": now, "exp": exp});
    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims(now + 600),
        &jsonwebtoken::EncodingKey::from_secret(b"some other key, not the server's"),
    )
    .unwrap();
    let key = std::fs::read(k.data.join("token.key")).unwrap();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims(now - 600),
        &jsonwebtoken::EncodingKey::from_secret(&key),
    )
    .unwrap();
    let mut parts = token.split('.');
    let (_, payload) = (parts.next(), parts.next().unwrap());
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    for bad in [
        "garbage",
        foreign.as_str(),
        expired.as_str(),
        unsigned.as_str(),
    ] {
        let (status, body) = k.json(Method::GET, "/api/jobs", bad, None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }

    // Login: wrong password, unknown user, malformed.
    for body in [
        json!({"username": "ana", "password": "nope"}),
        json!({"username": "mallory", "password": "x"}),
    ] {
        let resp = k
            .http
            .post(k.url("/auth/token"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = k
        .http
        .post(k.url("/auth/token"))
        .json(&json!({"username": "ana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = k
        .http
        .post(k.url("/auth/token"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn arguments_are_passed_literally_and_never_reach_a_shell() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("X");
    let t = target.display().to_string();
    let args = vec![
        format!("; touch {t}"),
        format!("$(touch {t})"),
        format!("`touch {t}`"),
        format!("&& touch {t}"),
        format!("| touch {t}"),
        "$HOME".to_string(),
        "'quoted'".to_string(),
    ];
    let repo = Repo::node("console.log(JSON.stringify(process.argv.slice(2)));");
    let id = k
        .submit(&token, json!({"url": repo.path(), "args": args}))
        .await;
    let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (_, stdout) = k.file(&token, &id, "stdout.log").await;
    let seen: Vec<String> = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(seen, args);
    // As one string, split by shell-word rules, still literal.
    let line = format!("a '; touch {t}' \"$(touch {t})\"");
    let id = k
        .submit(&token, json!({"url": repo.path(), "args": line}))
        .await;
    k.wait_for(&token, &id, &["succeeded"], 60).await;
    let (_, stdout) = k.file(&token, &id, "stdout.log").await;
    let seen: Vec<String> = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(
        seen,
        vec![
            "a".to_string(),
            format!("; touch {t}"),
            format!("$(touch {t})")
        ]
    );
    assert!(!target.exists(), "an argument ran as a command");
}

#[tokio::test]
async fn file_paths_cannot_leave_their_job() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let repo = Repo::example();
    let id = k.submit(&token, json!({"url": repo.path()})).await;
    k.wait_for(&token, &id, &["succeeded"], 60).await;
    let base = format!("/api/jobs/{id}/files");
    for path in [
        format!("{base}/../../../etc/passwd"),
        format!("{base}/output/../../../../etc/passwd"),
        format!("{base}/%2e%2e/%2e%2e/etc/passwd"),
        format!("{base}/..%2f..%2f..%2fetc%2fpasswd"),
        format!("{base}/output%2f..%2f..%2fkumulus.db"),
        format!("{base}/%2fetc%2fpasswd"),
        format!("{base}//etc/passwd"),
        format!("/api/results/{id}/..%2f..%2fkumulus.db"),
        format!("/api/results/{id}/%2e%2e"),
    ] {
        let status = k.raw_get(&path, &token);
        assert!(status == 404 || status == 400, "{path} -> {status}");
    }
    assert_eq!(k.raw_get(&format!("{base}/stdout.log"), &token), 200);
}

#[tokio::test]
async fn too_many_requests_get_429_with_retry_after() {
    let k = Kumulus::start(Options {
        env: vec![
            ("KUMULUS_API__RATE_PER_SEC".into(), "1".into()),
            ("KUMULUS_API__RATE_BURST".into(), "3".into()),
        ],
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let mut limited = None;
    for _ in 0..10 {
        let resp = k
            .http
            .get(k.url("/api/jobs"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = limited.expect("the rate limit never applied");
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another user has a budget of their own.
    let bob = k.login("bob").await;
    let (status, _) = k.json(Method::GET, "/api/jobs", &bob, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_answer_carries_a_request_id_that_its_log_lines_and_errors_name() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("up.log");
    let k = Kumulus::start(Options {
        env: vec![("KUMULUS_LOG".into(), "info".into())],
        log_file: Some(log.clone()),
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    // The client's own id comes back, in the header and in an error body.
    let resp = k
        .http
        .get(k.url("/api/jobs/not-a-job"))
        .bearer_auth(&token)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], "trace-me-42", "{body}");
    // A request without one gets a new one; one that is not a plain token
    // is replaced, never echoed.
    let mut seen = std::collections::BTreeSet::new();
    for given in [None, Some("two words"), Some("x;y")] {
        let mut req = k.http.get(k.url("/health"));
        if let Some(v) = given {
            req = req.header("x-request-id", v);
        }
        let resp = req.send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert_ne!(Some(id.as_str()), given);
        seen.insert(id);
    }
    assert_eq!(seen.len(), 3, "each request its own id");
    // The request's log lines name it.
    let repo = Repo::node("console.log('hi');");
    let resp = k
        .http
        .post(k.url("/api/jobs"))
        .bearer_auth(&token)
        .header("x-request-id", "submit-req-7")
        .json(&json!({"url": repo.path()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    common::eventually(10, "the submit's log line", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("job accepted") && l.contains("submit-req-7"))
    })
    .await;
}
