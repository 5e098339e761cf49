//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (chromedriver), against `kumulus up`. A person logs in with the
//! keyboard, submits the example and watches it succeed, reads its log,
//! downloads its output file, cancels a running job, deletes an ended one,
//! cannot reach another user's job, and sees the autoscaler's page with
//! data. Screenshots of each view go to `KUMULUS_SCREENSHOTS` (by default
//! `target/screenshots`).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::browser::{submit, Browser};
use common::{Kumulus, Options, Repo, USERS};
use fantoccini::Locator;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn api_session(k: &Kumulus, user: usize) -> kumulus_client::Session {
    let (u, p) = USERS[user];
    kumulus_client::Client::new(&k.api.url(""))
        .unwrap()
        .login(u, p)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_person_submits_the_example_watches_it_succeed_reads_its_log_and_downloads_its_output() {
    let k = Kumulus::start(Options::default()).await;
    let repo = Repo::example();
    let b = Browser::open(&k.api.url("")).await;

    // The page needs a login first, and says so.
    b.go("").await;
    b.find("#login-form").await;
    b.shot("login").await;
    b.log_in(USERS[0].0, USERS[0].1).await;

    let id = submit(
        &b,
        &repo.path(),
        "hello 'kumulus world'",
        r#"{"greeting":"hi"}"#,
    )
    .await;
    b.text_until("#job-facts", 60, |t| t.contains("succeeded"))
        .await;
    // Its log, as the job wrote it.
    let log = b
        .text_until("#logs", 20, |t| t.contains("wrote output/result.json"))
        .await;
    assert!(
        log.contains(r#"hello from kumulus; args: ["hello","kumulus world"]"#),
        "{log}"
    );
    assert!(log.contains("config keys: greeting"), "{log}");
    b.shot("job").await;

    // Its output file, downloaded by the browser, is the stored one.
    b.find(r#"#files button[data-file="output/result.json"]"#)
        .await
        .click()
        .await
        .unwrap();
    let got: Value = serde_json::from_slice(&b.downloaded("result.json").await).unwrap();
    assert_eq!(got["args"], json!(["hello", "kumulus world"]));
    assert_eq!(got["config"]["greeting"], "hi");
    let api = api_session(&k, 0).await;
    let stored = api.file(&id, "output/result.json").await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap(), got);

    // The jobs table lists it as succeeded, with its exit code.
    b.go("#/jobs").await;
    let row = b
        .text_until(&format!(r#"tr[data-id="{id}"]"#), 20, |t| {
            t.contains("succeeded")
        })
        .await;
    assert!(row.contains(&repo.path()), "{row}");
    b.shot("jobs").await;
}

#[tokio::test]
async fn a_running_job_is_cancelled_from_its_page_and_an_ended_one_deleted() {
    let k = Kumulus::start(Options::default()).await;
    let repo = Repo::node("console.log('working'); setTimeout(() => {}, 60000);");
    let b = Browser::open(&k.api.url("")).await;
    b.log_in(USERS[0].0, USERS[0].1).await;

    let id = submit(&b, &repo.path(), "", "").await;
    b.text_until("#job-facts", 60, |t| t.contains("running"))
        .await;
    // Its log arrives live while it runs.
    b.text_until("#logs", 30, |t| t.contains("working")).await;
    b.find("#cancel").await.click().await.unwrap();
    b.text_until("#job-facts", 30, |t| t.contains("cancelled"))
        .await;
    let api = api_session(&k, 0).await;
    assert_eq!(
        api.job(&id).await.unwrap().state,
        kumulus_client::JobState::Cancelled
    );

    // Ended, it can be deleted (after a confirmation).
    b.find("#delete").await.click().await.unwrap();
    b.client.accept_alert().await.unwrap();
    b.text_until("#notice", 20, |t| t.contains("deleted")).await;
    let gone = api.job(&id).await.unwrap_err();
    assert_eq!(
        gone.status(),
        Some(reqwest::StatusCode::NOT_FOUND),
        "{gone}"
    );
}

#[tokio::test]
async fn another_users_job_is_not_reachable_from_the_page() {
    let k = Kumulus::start(Options::default()).await;
    let repo = Repo::example();
    let bob = api_session(&k, 1).await;
    let theirs = bob
        .submit(&kumulus_client::NewJob::repo(repo.path()))
        .await
        .unwrap()
        .id
        .to_string();
    bob.wait(&theirs, Duration::from_millis(200), Duration::from_secs(60))
        .await
        .unwrap();

    let b = Browser::open(&k.api.url("")).await;
    b.log_in(USERS[0].0, USERS[0].1).await;
    // Not in ana's table...
    b.text_until("#jobs-empty", 20, |t| t.contains("No jobs yet"))
        .await;
    assert!(b
        .client
        .find(Locator::Css(&format!(r#"tr[data-id="{theirs}"]"#)))
        .await
        .is_err());
    // ...and not at its address.
    b.go(&format!("#/jobs/{theirs}")).await;
    b.text_until("#not-found", 20, |t| t.contains("No such job of yours"))
        .await;
    assert!(b.client.find(Locator::Css("#files button")).await.is_err());
    assert!(b
        .client
        .find(Locator::Css("#cancel, #delete"))
        .await
        .is_err());
}

#[tokio::test]
async fn the_autoscaler_page_shows_workers_waiting_jobs_arrivals_and_decisions() {
    let k = Kumulus::start(Options::default()).await;
    let repo = Repo::example();
    let api = api_session(&k, 0).await;
    for _ in 0..3 {
        api.submit(&kumulus_client::NewJob::repo(repo.path()))
            .await
            .unwrap();
    }
    let b = Browser::open(&k.api.url("")).await;
    b.log_in(USERS[0].0, USERS[0].1).await;
    b.go("#/autoscaler").await;
    // The test's autoscaler decides every second: its decisions show up.
    b.text_until("#scaler-summary", 30, |t| t.contains("workers"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = b
            .client
            .find_all(Locator::Css("#decisions-body tr"))
            .await
            .unwrap();
        let workers = b.points("#chart-workers").await;
        let queue = b.points("#chart-queue").await;
        let load = b.points("#chart-load").await;
        if rows.len() >= 2 && workers >= 4 && queue >= 6 && load >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never filled: {} decisions, points {workers}/{queue}/{load}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The decisions name their rule and reason; the workers are the
    // configured two.
    let table = b.text_until("#decisions-body", 5, |t| !t.is_empty()).await;
    assert!(
        table.contains("min_workers")
            || table.contains("max_workers")
            || table.contains("policy")
            || table.contains("hold"),
        "{table}"
    );
    let summary = b.find("#scaler-summary").await.text().await.unwrap();
    assert!(summary.starts_with("2 workers"), "{summary}");
    b.shot("autoscaler").await;
}
