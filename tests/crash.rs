//! `kumulus up` killed (SIGKILL, no clean-up) at the worst moments: a job
//! that ended never runs again, a job that was running never runs twice at
//! once (nothing of it outlives the process) and comes back as a new
//! attempt; and the README's own way of running it, with the relative
//! default data folder, works.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{processes_with, report, Kumulus, Options, Repo};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_readmes_default_relative_data_folder_runs_the_example() {
    let k = Kumulus::start(Options {
        default_data_dir: true,
        ..Options::default()
    })
    .await;
    assert!(k.data.is_dir(), "kumulus-data made in the current folder");
    let token = k.login("ana").await;
    let repo = Repo::example();
    let id = k
        .submit(&token, json!({"url": repo.path(), "args": "hello world"}))
        .await;
    let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

/// A job that prints a different number each time it runs.
fn random_job() -> Repo {
    Repo::node("console.log(String(Math.random()));")
}

#[tokio::test]
async fn a_job_that_ended_never_runs_again_after_a_crash() {
    let mut k = Kumulus::start(Options::default()).await;
    let repo = random_job();
    let mut ids = Vec::new();
    let fault = chrono::Utc::now();
    for round in 0..3 {
        let token = k.login("ana").await;
        let id = k.submit(&token, json!({"url": repo.path()})).await;
        ids.push(id.clone());
        // Poll as fast as a client can, and kill the moment it shows ended.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job = k.job(&token, &id).await;
            if job["state"] == "succeeded" {
                break;
            }
            assert!(Instant::now() < deadline, "never ended: {job}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        k = k.crash_and_restart().await;
        let token = k.login("ana").await;
        let (_, first) = k.file(&token, &id, "stdout.log").await;
        let before = k.job(&token, &id).await;
        // Long enough for a queued job to be taken and run (slots are free).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = k.job(&token, &id).await;
        let (_, again) = k.file(&token, &id, "stdout.log").await;
        assert_eq!(after, before, "round {round}: the record changed");
        assert_eq!(after["attempt"], 1, "{after}");
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&first),
            "round {round}: the job ran again"
        );
    }
    let token = k.login("ana").await;
    let scenario = "kumulus up SIGKILLed right after a job ended (3 rounds)";
    report(&k, &token, scenario, &ids, fault, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_job_running_at_a_crash_never_runs_twice_at_once_and_comes_back() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let marker = format!("kumulus-crash-marker-{}", std::process::id());
    // Sleeps for its first argument's seconds, then prints the attempt's pid.
    let repo = Repo::node("setTimeout(() => console.log('done'), Number(process.argv[2]) * 1000);");
    let id = k
        .submit(
            &token,
            json!({"url": repo.path(), "args": ["4", marker.clone()]}),
        )
        .await;
    k.wait_for(&token, &id, &["running"], 60).await;
    // The sandboxed process is up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the job's process never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let k = k.crash_and_restart().await;
    let fault = chrono::Utc::now();
    // Nothing of the first run survives its worker; the second one is the
    // only one, so at no time do two run.
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = k.login("ana").await;
    let mut most_at_once = 0;
    let job = loop {
        let job = k.job(&token, &id).await;
        let running = processes_with(&marker)
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim() == "node")
                    .unwrap_or(false)
            })
            .count();
        most_at_once = most_at_once.max(running);
        if job["state"] == "succeeded" || job["state"] == "failed" {
            break job;
        }
        assert!(Instant::now() < deadline, "never ended: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(most_at_once <= 1, "{most_at_once} runs at once");
    assert_eq!(job["attempt"], 2, "a new attempt: {job}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job}");
    assert!(
        attempts[0]["ended"]
            .as_str()
            .unwrap_or("")
            .contains("restarted"),
        "{job}"
    );
    let (_, out) = k.file(&token, &id, "stdout.log").await;
    assert_eq!(String::from_utf8_lossy(&out), "done\n");
    // The interrupted run's work folder went at start.
    let work = k.data.join("work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", work.display());
    let scenario = "kumulus up SIGKILLed right after a job's sandbox started";
    report(&k, &token, scenario, &[id], fault, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_sigkill_mid_burst_loses_no_job_it_accepted() {
    // The per-user rate limit lifted, so that the burst is a real one: many
    // submits share each commit of the job store.
    let k = Kumulus::start(Options {
        slots: 1,
        env: vec![
            ("KUMULUS_API__RATE_PER_SEC".into(), "100000".into()),
            ("KUMULUS_API__RATE_BURST".into(), "100000".into()),
        ],
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    // Each job fails at once (no such repository): what is checked is that
    // it exists, whatever it then did.
    let body = json!({"url": "/nonexistent/kumulus-burst-repo", "config": "{}"});
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (api, token, body, accepted) = (
            common::Api::new(k.base.clone()),
            token.clone(),
            body.clone(),
            accepted.clone(),
        );
        clients.push(tokio::spawn(async move {
            loop {
                let sent = api
                    .http
                    .post(api.url("/api/jobs"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                // The process is gone: this client is done.
                let Ok(resp) = sent else { return };
                if resp.status() != reqwest::StatusCode::CREATED {
                    continue;
                }
                let Ok(v) = resp.json::<serde_json::Value>().await else {
                    return;
                };
                accepted
                    .lock()
                    .unwrap()
                    .push(v["id"].as_str().unwrap().to_string());
            }
        }));
    }
    // Killed while the burst is in full flow.
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "the burst never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fault = chrono::Utc::now();
    let k = k.crash_and_restart().await;
    for c in clients {
        c.await.unwrap();
    }
    let ids = accepted.lock().unwrap().clone();
    let token = k.login("ana").await;
    for id in &ids {
        let job = k.job(&token, id).await;
        let error = job["error"].as_str().unwrap_or("");
        assert!(!error.contains("lost"), "an accepted job was lost: {job}");
    }
    // Nor is any job half-accepted (a record with no queue entry): every
    // job in the store, answered or not, runs to its end.
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = k
            .json(
                reqwest::Method::GET,
                &format!("/api/jobs?limit=100{cursor}"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
        for j in page["jobs"].as_array().unwrap() {
            all.push(j["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert!(
        all.len() >= ids.len(),
        "{} stored, {} accepted",
        all.len(),
        ids.len()
    );
    for id in &all {
        let job = k.wait_for(&token, id, &["failed"], 120).await;
        let error = job["error"].as_str().unwrap_or("");
        assert!(!error.contains("lost"), "a job was half-accepted: {job}");
    }
    let scenario = "kumulus up SIGKILLed mid-burst of 16 clients submitting";
    report(&k, &token, scenario, &ids, fault, Duration::from_secs(1)).await;
}
