//! Webhooks: a job's record is POSTed to its callback URL when it ends,
//! signed, retried until the receiver takes it; callbacks the rules do not
//! allow are refused at submission.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use base64::Engine;
use common::{Kumulus, Options, Receiver, Repo};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SECRET: &str = "whsec-test-3f9a";

fn env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    [
        ("KUMULUS_WEBHOOKS__SECRET", SECRET),
        ("KUMULUS_WEBHOOKS__POLL_MS", "200"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Checks a delivery's signature the way a receiver would.
fn verify(headers: &std::collections::HashMap<String, String>, body: &[u8]) {
    let signed = format!(
        "{}.{}.{}",
        headers["webhook-id"],
        headers["webhook-timestamp"],
        String::from_utf8_lossy(body)
    );
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(headers["webhook-signature"], want);
}

#[tokio::test]
async fn an_ended_job_is_posted_signed_and_retried_until_the_receiver_takes_it() {
    let k = Kumulus::start(Options {
        env: env(&[
            ("KUMULUS_WEBHOOKS__ALLOW_HTTP", "true"),
            ("KUMULUS_WEBHOOKS__ALLOW_PRIVATE", "true"),
        ]),
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    // The receiver fails the first try.
    let hook = Receiver::start(vec![500, 200]).await;
    let repo = Repo::node("console.log('hooked');");
    let url = format!("http://127.0.0.1:{}/hook?token=abc", hook.port);
    let id = k
        .submit(&token, json!({"url": repo.path(), "callback_url": url}))
        .await;
    let queued = k.job(&token, &id).await;
    assert_eq!(queued["webhook"]["state"], "pending", "{queued}");
    k.wait_for(&token, &id, &["succeeded"], 60).await;
    common::eventually(30, "two tries at the receiver", || hook.count() >= 2).await;
    let job = {
        let mut job = Value::Null;
        for _ in 0..50 {
            job = k.job(&token, &id).await;
            if job["webhook"]["state"] == "delivered" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        job
    };
    assert_eq!(job["webhook"]["state"], "delivered", "{job}");
    assert_eq!(job["webhook"]["attempts"], 2);
    assert_eq!(job["webhook"]["last_status"], 200);
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "no try after the one that took");
    for (headers, body) in &seen {
        assert_eq!(
            headers["webhook-id"],
            format!("job_{id}"),
            "one id for every try"
        );
        assert_eq!(headers["content-type"], "application/json");
        verify(headers, body);
        let rec: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            (rec["id"].as_str(), rec["state"].as_str()),
            (Some(id.as_str()), Some("succeeded"))
        );
        assert!(rec.get("webhook").is_none(), "{rec}");
    }
}

#[tokio::test]
async fn callbacks_the_rules_do_not_allow_are_refused() {
    let strict = Kumulus::start(Options {
        env: env(&[(
            "KUMULUS_WEBHOOKS__ALLOW_HOSTS",
            "[\"hooks.example.com\", \"127.0.0.1\"]",
        )]),
        ..Options::default()
    })
    .await;
    let token = strict.login("ana").await;
    let repo = Repo::node("console.log('x');");
    let refused = |callback: String, why: &'static str| {
        let body = json!({"url": repo.path(), "callback_url": callback});
        let (k, token) = (&strict, &token);
        async move {
            let (status, answer) = k.json(Method::POST, "/api/jobs", token, Some(body)).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{callback}: {answer}"
            );
            let message = answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                message.contains("callback_url") && message.contains(why),
                "{callback}: {message}"
            );
        }
    };
    refused("http://127.0.0.1:9/hook".into(), "allow_http").await;
    refused("https://127.0.0.1:9/hook".into(), "not public").await;
    refused("https://other.example.com/hook".into(), "allow_hosts").await;
    refused("https://u:p@hooks.example.com/hook".into(), "credentials").await;
    refused("ftp://hooks.example.com/hook".into(), "scheme").await;

    // A name that resolves to a non-public address is refused too (the
    // machine's own name, where it resolves to one, as it usually does).
    let open = Kumulus::start(Options {
        env: env(&[]),
        ..Options::default()
    })
    .await;
    let token = open.login("ana").await;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let private = tokio::net::lookup_host((name.as_str(), 443))
        .await
        .map(|addrs| {
            addrs.into_iter().any(|a| {
                a.ip().is_loopback() || matches!(a.ip(), std::net::IpAddr::V4(v) if v.is_private())
            })
        })
        .unwrap_or(false);
    if private {
        let body = json!({"url": repo.path(), "callback_url": format!("https://{name}/hook")});
        let (status, answer) = open
            .json(Method::POST, "/api/jobs", &token, Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not public"),
            "{answer}"
        );
    } else {
        eprintln!("{name} resolves to no private address here; its check is skipped");
    }

    // No secret, no webhooks.
    let off = Kumulus::start(Options::default()).await;
    let token = off.login("ana").await;
    let body = json!({"url": repo.path(), "callback_url": "https://hooks.example.com/x"});
    let (status, answer) = off
        .json(Method::POST, "/api/jobs", &token, Some(body))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhooks.secret"),
        "{answer}"
    );
}
