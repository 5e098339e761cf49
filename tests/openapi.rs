//! The API's contract: the OpenAPI 3.1 document at `/openapi.json` (made
//! from the code) covers every route with its errors and its auth, `/docs`
//! reads it to people, and an outside fuzzer (schemathesis) finds nothing
//! wrong with the running server against it.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::cluster::Servers;
use common::{Kumulus, Options};
use serde_json::Value;
use std::collections::BTreeSet;

/// Every operation of the API, as its clients know it.
const OPERATIONS: [(&str, &str); 19] = [
    ("post", "/api/jobs"),
    ("get", "/api/jobs"),
    ("get", "/api/jobs/{id}"),
    ("delete", "/api/jobs/{id}"),
    ("post", "/api/jobs/{id}/cancel"),
    ("get", "/api/jobs/{id}/files"),
    ("get", "/api/jobs/{id}/files/{path}"),
    ("get", "/api/jobs/{id}/logs"),
    ("post", "/api/addJob"),
    ("get", "/api/status"),
    ("get", "/api/status/{id}"),
    ("get", "/api/results/{id}/{file}"),
    ("get", "/api/deleteJob/{id}"),
    ("post", "/auth/token"),
    ("get", "/auth/{user}/{password}"),
    ("get", "/health"),
    ("get", "/health/load"),
    ("get", "/metrics"),
    ("get", "/api/autoscaler"),
];

#[tokio::test]
async fn the_document_covers_every_route_with_its_errors_and_auth() {
    let k = Kumulus::start(Options::default()).await;
    let doc: Value = serde_json::from_str(&k.api.text("/openapi.json").await).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        serde_json::json!({"type": "http", "scheme": "bearer"})
    );
    let mut found = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            found.insert((method.clone(), path.clone()));
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_string()),
                "{method} {path}: operationId {id:?} not unique"
            );
            let responses = op["responses"].as_object().unwrap();
            let secured = op.get("security").is_some();
            assert_eq!(
                secured,
                path.starts_with("/api/"),
                "{method} {path}: bearer on /api only"
            );
            for status in ["414", "431", "500"].into_iter().chain(
                secured
                    .then_some(["401", "429", "503"])
                    .into_iter()
                    .flatten(),
            ) {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
            // Every error has the one error shape.
            for (status, resp) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        resp["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let want: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(found, want);
    // Each operation is routed: without a token, an /api route is a 401 and
    // the others answer (never the 404 of an unknown route).
    for (method, path) in OPERATIONS {
        let concrete = path
            .replace("{id}", "01a23124-9c86-70f7-b3e1-24525679bb82")
            .replace(['{', '}'], "");
        let resp = k
            .api
            .http
            .request(method.to_uppercase().parse().unwrap(), k.api.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        if path.starts_with("/api/") || path.starts_with("/auth/{") {
            assert_eq!(status, 401, "{method} {concrete}");
        } else {
            assert!(
                ![404, 405].contains(&status),
                "{method} {concrete}: {status}"
            );
        }
    }
    // The page for people has every path, and needs nothing from elsewhere.
    let page = k.api.text("/docs").await;
    for (_, path) in OPERATIONS {
        assert!(
            page.contains(&format!("<code>{path}</code>")),
            "/docs lacks {path}"
        );
    }
    assert!(!page.contains("<script"), "/docs loads no script");
}

/// schemathesis (PyPI), installed by `scripts/test.sh` like the servers,
/// on every documented operation: examples, coverage, fuzzing with positive
/// and negative data, and the stateful links (submit, then read, list,
/// follow, delete). Every check is on, but one: `positive_data_acceptance`
/// wants every schema-valid request to succeed, which no schema can promise
/// for rules that are the server's configuration (the repositories it
/// takes, its webhook hosts, its limits).
#[tokio::test]
async fn schemathesis_finds_no_failure_in_any_operation() {
    let servers = Servers::load();
    let schemathesis = servers.get("SCHEMATHESIS").to_string();
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let out = tokio::process::Command::new(&schemathesis)
        .args([
            "--no-color",
            "run",
            &k.api.url("/openapi.json"),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--mode",
            "all",
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--request-timeout",
            "30",
        ])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {schemathesis}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It tested every operation and ran every phase.
    assert!(text.contains("Tested: 19"), "{text}");
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            text.contains(&format!("✅ {phase}")),
            "{phase} did not pass:\n{text}"
        );
    }
}
