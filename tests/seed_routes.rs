//! The seed's routes, for existing clients: a full submit, status, results,
//! delete cycle with the seed's shapes and state names.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{Kumulus, Options, Repo, USERS};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn the_seed_cycle_works() {
    let k = Kumulus::start(Options {
        slots: 1,
        ..Options::default()
    })
    .await;
    let (user, password) = USERS[0];
    let resp = k
        .http
        .get(k.url(&format!("/auth/{user}/{password}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let resp = k
        .http
        .get(k.url(&format!("/auth/{user}/wrong")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let repo = Repo::example();
    let (status, body) = k
        .json(
            Method::POST,
            "/api/addJob",
            &token,
            Some(json!({"url": repo.path(), "args": "uno dos", "config": "{\"k\": 1}"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["jobId"].as_str().unwrap().to_string();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status_body = loop {
        let (status, body) = k
            .json(Method::GET, &format!("/api/status/{id}"), &token, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            ["En espera", "Lanzado", "Finalizado"].contains(&body["status"].as_str().unwrap()),
            "{body}"
        );
        if body["status"] == "Finalizado" {
            break body;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status_body["id"], id.as_str());
    let files: Vec<&str> = status_body["outputFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        vec![
            format!("/api/results/{id}/stdout.log"),
            format!("/api/results/{id}/stderr.log"),
            format!("/api/results/{id}/output%2Fresult.json"),
        ]
    );
    // The listed links work, and so does the seed's bare output file name.
    for link in [
        files[2].to_string(),
        format!("/api/results/{id}/result.json"),
    ] {
        let (status, bytes) = k.call(Method::GET, &link, &token, None).await;
        assert_eq!(status, StatusCode::OK, "{link}");
        let result: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(result["args"], json!(["uno", "dos"]));
        assert_eq!(result["config"], json!({"k": 1}));
    }
    let (status, _) = k
        .call(
            Method::GET,
            &format!("/api/results/{id}/nope.txt"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, all) = k.json(Method::GET, "/api/status", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all[0]["id"], id.as_str());
    assert_eq!(all[0]["status"], "Finalizado");

    // A finished job is removed with its files, with the seed's answer;
    // a queued or running one is cancelled (below).
    let (status, text) = k
        .call(Method::GET, &format!("/api/deleteJob/{id}"), &token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8(text).unwrap(),
        format!("El trabajo {id} ha sido eliminado.")
    );
    for path in [
        format!("/api/status/{id}"),
        format!("/api/jobs/{id}"),
        format!("/api/results/{id}/stdout.log"),
    ] {
        let (status, _) = k.call(Method::GET, &path, &token, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} after the delete");
    }
    let (status, _) = k
        .call(Method::GET, &format!("/api/deleteJob/{id}"), &token, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a job deleted twice");
    let sleeper = Repo::node("setTimeout(() => {}, 30000);");
    let (_, body) = k
        .json(
            Method::POST,
            "/api/addJob",
            &token,
            Some(json!({"url": sleeper.path(), "timeout_secs": 20})),
        )
        .await;
    let busy = body["jobId"].as_str().unwrap().to_string();
    let (_, body) = k
        .json(
            Method::POST,
            "/api/addJob",
            &token,
            Some(json!({"url": sleeper.path()})),
        )
        .await;
    let waiting = body["jobId"].as_str().unwrap().to_string();
    let (status, text) = k
        .call(
            Method::GET,
            &format!("/api/deleteJob/{waiting}"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8(text).unwrap(),
        format!("El trabajo {waiting} ha sido eliminado.")
    );
    let (_, body) = k
        .json(Method::GET, &format!("/api/status/{waiting}"), &token, None)
        .await;
    assert_eq!(body["status"], "Eliminado");
    let (status, _) = k
        .call(Method::GET, &format!("/api/deleteJob/{busy}"), &token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn add_job_takes_an_html_form_as_the_seed_did() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login(USERS[0].0).await;
    let repo = Repo::node("console.log(JSON.stringify(process.argv.slice(2)));");
    let form = format!(
        "url={}&args=uno&args=dos+tres&config=%7B%22k%22%3A1%7D",
        urlencode(&repo.path())
    );
    let resp = k
        .http
        .post(k.url("/api/addJob"))
        .bearer_auth(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let id = body["jobId"].as_str().unwrap().to_string();
    let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (_, stdout) = k.file(&token, &id, "stdout.log").await;
    assert_eq!(
        String::from_utf8(stdout).unwrap().trim(),
        r#"["uno","dos tres"]"#
    );
    // A form is checked as JSON is: a field it does not know is named.
    let resp = k
        .http
        .post(k.url("/api/addJob"))
        .bearer_auth(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("url={}&colour=red", urlencode(&repo.path())))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(resp.text().await.unwrap().contains("colour"));
}

/// Percent-encodes a form value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
