//! Running jobs through `kumulus up`: success, failure, time limit,
//! cancellation, and isolation between users.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{eventually, processes_with, GitDaemon, Kumulus, Options, Repo};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn the_example_job_succeeds_and_its_files_download() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let repo = Repo::example();
    let id = k
        .submit(
            &token,
            json!({"url": repo.path(), "args": "hello 'big world'", "config": {"greeting": "hi"}}),
        )
        .await;
    let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["exit_code"], 0);
    assert!(job["elapsed_secs"].as_f64().unwrap() > 0.0);
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    assert_eq!(job["args"], json!(["hello", "big world"]));
    assert_eq!(
        job["files"],
        json!(["stdout.log", "stderr.log", "output/result.json"])
    );

    let (status, stdout) = k.file(&token, &id, "stdout.log").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8(stdout).unwrap(),
        "hello from kumulus; args: [\"hello\",\"big world\"]\nwrote output/result.json\n"
    );
    let (_, stderr) = k.file(&token, &id, "stderr.log").await;
    assert_eq!(
        String::from_utf8(stderr).unwrap(),
        "config keys: greeting\n"
    );
    let (status, result) = k.file(&token, &id, "output/result.json").await;
    assert_eq!(status, StatusCode::OK);
    let result: serde_json::Value = serde_json::from_slice(&result).unwrap();
    assert_eq!(
        result,
        json!({"args": ["hello", "big world"], "config": {"greeting": "hi"}, "words": 2})
    );

    let resp = k
        .http
        .get(k.url(&format!("/api/jobs/{id}/files/output/result.json")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let (status, list) = k
        .json(Method::GET, &format!("/api/jobs/{id}/files"), &token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["files"].as_array().unwrap().len(), 3);

    // The run shows in the metrics and in the observations.
    let metrics = k.text("/metrics").await;
    assert!(
        metrics.contains("kumulus_jobs_submitted_total 1"),
        "{metrics}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (arrivals, _) = k.observed_arrivals().await;
        if arrivals == 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no observation of the arrival: {arrivals}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_failing_job_keeps_its_exit_code_and_stderr() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let repo = Repo::node("console.log('partial'); console.error('boom'); process.exit(3);");
    let id = k.submit(&token, json!({"url": repo.path()})).await;
    let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["exit_code"], 3);
    assert!(job["error"].as_str().unwrap().contains("code 3"));
    let (_, stderr) = k.file(&token, &id, "stderr.log").await;
    assert!(String::from_utf8_lossy(&stderr).contains("boom"));
    let (_, stdout) = k.file(&token, &id, "stdout.log").await;
    assert_eq!(stdout, b"partial\n");
}

#[tokio::test]
async fn repositories_without_a_start_script_or_that_do_not_clone_fail_clearly() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let no_pkg = Repo::new(&[("README", "nothing to run")]);
    let no_start = Repo::new(&[("package.json", r#"{"name":"x","scripts":{"test":"true"}}"#)]);
    let missing = no_pkg
        .dir
        .path()
        .join("does-not-exist")
        .display()
        .to_string();
    let cases = [
        (no_pkg.path(), "no package.json"),
        (no_start.path(), "no `start` script"),
        (missing, "git clone failed"),
    ];
    for (url, reason) in cases {
        let id = k.submit(&token, json!({"url": url})).await;
        let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
        assert_eq!(job["state"], "failed", "{job}");
        assert!(job["error"].as_str().unwrap().contains(reason), "{job}");
    }
}

#[tokio::test]
async fn a_job_past_its_time_limit_is_timed_out() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let repo = Repo::node("setTimeout(() => {}, 60000);");
    let id = k
        .submit(&token, json!({"url": repo.path(), "timeout_secs": 1}))
        .await;
    let job = k
        .wait_for(&token, &id, &["succeeded", "failed", "timed_out"], 60)
        .await;
    assert_eq!(job["state"], "timed_out", "{job}");
    assert!(job["error"].as_str().unwrap().contains("time limit of 1 s"));
}

#[tokio::test]
async fn cancelling_queued_and_running_jobs() {
    let k = Kumulus::start(Options {
        slots: 1,
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let marker = format!("kumulus-cancel-{}", std::process::id());
    let repo = Repo::node("setInterval(() => {}, 1000);");
    let running = k
        .submit(
            &token,
            json!({"url": repo.path(), "args": [marker.clone()]}),
        )
        .await;
    k.wait_for(&token, &running, &["running"], 60).await;
    eventually(30, "the job's process to start", || {
        !processes_with(&marker).is_empty()
    })
    .await;

    // One slot is busy: this one waits in the queue.
    let queued = k
        .submit(&token, json!({"url": repo.path(), "args": ["queued-one"]}))
        .await;
    let (status, rec) = k
        .json(
            Method::POST,
            &format!("/api/jobs/{queued}/cancel"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{rec}");
    assert_eq!(rec["state"], "cancelled");
    assert_eq!(rec["id"], queued.as_str());
    // Cancelled, it stays, and cancelling it again is a conflict.
    assert_eq!(k.job(&token, &queued).await["state"], "cancelled");
    let (status, _) = k
        .call(
            Method::POST,
            &format!("/api/jobs/{queued}/cancel"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, rec) = k
        .json(
            Method::POST,
            &format!("/api/jobs/{running}/cancel"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{rec}");
    assert_eq!(rec["state"], "cancelled");
    eventually(10, "the cancelled job's processes to be gone", || {
        processes_with(&marker).is_empty()
    })
    .await;

    // Deleting it: it has ended, so it is removed, files and all.
    let (status, _) = k
        .call(
            Method::DELETE,
            &format!("/api/jobs/{running}"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for path in [
        format!("/api/jobs/{running}"),
        format!("/api/jobs/{running}/files"),
        format!("/api/jobs/{running}/files/stdout.log"),
    ] {
        let (status, _) = k.call(Method::GET, &path, &token, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} after the delete");
    }
    let metrics = k.text("/metrics").await;
    assert_eq!(
        common::metric_where(&metrics, "kumulus_jobs_removed_total", "reason=\"deleted\""),
        Some(1.0),
        "{metrics}"
    );

    // The slot is free again and the cancelled queued job never ran.
    let ok = Repo::node("console.log('after');");
    let next = k.submit(&token, json!({"url": ok.path()})).await;
    let job = k
        .wait_for(&token, &next, &["succeeded", "failed"], 60)
        .await;
    assert_eq!(job["state"], "succeeded");
    let rec = k.job(&token, &queued).await;
    assert_eq!(rec["state"], "cancelled");
    assert!(rec["started_at"].is_null(), "{rec}");

    // DELETE on a running job cancels it and deletes it: gone at once, its
    // process stopped, and what its worker uploaded as it stopped swept.
    let marker = format!("kumulus-delete-{}", std::process::id());
    let doomed = k
        .submit(
            &token,
            json!({"url": repo.path(), "args": [marker.clone()]}),
        )
        .await;
    k.wait_for(&token, &doomed, &["running"], 60).await;
    let (status, rec) = k
        .json(Method::DELETE, &format!("/api/jobs/{doomed}"), &token, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{rec}");
    assert_eq!(rec["state"], "cancelled");
    let (status, _) = k
        .call(Method::GET, &format!("/api/jobs/{doomed}"), &token, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    eventually(10, "the deleted job's processes to be gone", || {
        processes_with(&marker).is_empty()
    })
    .await;
    let folder = k.data.join("files").join(&doomed);
    // Past the first sweep (5 s after the delete).
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    assert!(!folder.exists(), "{} is left", folder.display());
}

#[tokio::test]
async fn users_only_ever_see_their_own_jobs() {
    let k = Kumulus::start(Options::default()).await;
    let ana = k.login("ana").await;
    let bob = k.login("bob").await;
    let repo = Repo::example();
    let id = k.submit(&ana, json!({"url": repo.path()})).await;
    k.wait_for(&ana, &id, &["succeeded"], 60).await;

    let paths = [
        (Method::GET, format!("/api/jobs/{id}")),
        (Method::GET, format!("/api/jobs/{id}/files")),
        (Method::GET, format!("/api/jobs/{id}/files/stdout.log")),
        (Method::DELETE, format!("/api/jobs/{id}")),
        (Method::GET, format!("/api/status/{id}")),
        (Method::GET, format!("/api/results/{id}/stdout.log")),
        (Method::GET, format!("/api/deleteJob/{id}")),
    ];
    for (method, path) in paths {
        let (status, body) = k.json(method.clone(), &path, &bob, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (_, list) = k.json(Method::GET, "/api/jobs", &bob, None).await;
    assert_eq!(list["jobs"], json!([]));
    let (_, list) = k.json(Method::GET, "/api/status", &bob, None).await;
    assert_eq!(list, json!([]));
    let (_, list) = k.json(Method::GET, "/api/jobs", &ana, None).await;
    assert_eq!(list["jobs"][0]["id"], id.as_str());
}

#[tokio::test]
async fn listing_pages_newest_first_and_filters_by_state() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let repo = Repo::new(&[("README", "no package.json: fails at once")]);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(k.submit(&token, json!({"url": repo.path()})).await);
    }
    for id in &ids {
        k.wait_for(&token, id, &["failed"], 60).await;
    }
    ids.reverse();
    let (status, page) = k.json(Method::GET, "/api/jobs?limit=2", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    let got: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids[..2]);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, rest) = k
        .json(
            Method::GET,
            &format!("/api/jobs?limit=10&cursor={cursor}"),
            &token,
            None,
        )
        .await;
    let got: Vec<&str> = rest["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids[2..]);
    assert!(rest["next_cursor"].is_null());
    let (_, failed) = k
        .json(Method::GET, "/api/jobs?state=failed", &token, None)
        .await;
    assert_eq!(failed["jobs"].as_array().unwrap().len(), 5);
    let (_, running) = k
        .json(Method::GET, "/api/jobs?state=running", &token, None)
        .await;
    assert_eq!(running["jobs"], json!([]));
}

#[tokio::test]
async fn output_limits_end_a_job_and_symlinks_are_never_followed() {
    let k = Kumulus::start(Options {
        env: vec![
            ("KUMULUS_WORKER__OUTPUT_MAX_FILES".into(), "2".into()),
            ("KUMULUS_WORKER__OUTPUT_LIMIT_BYTES".into(), "4096".into()),
        ],
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let many = Repo::node(
        "const fs = require('fs'); for (const n of ['a', 'b', 'c']) fs.writeFileSync('output/' + n, n); console.log('wrote 3');",
    );
    let big = Repo::node("require('fs').writeFileSync('output/big', 'x'.repeat(10000));");
    let link = Repo::node(
        "const fs = require('fs'); fs.symlinkSync('/etc/passwd', 'output/passwd'); fs.writeFileSync('output/ok.txt', 'ok');",
    );
    let cases = [
        (many.path(), "failed", Some("worker.output_max_files")),
        (big.path(), "failed", Some("worker.output_limit_bytes")),
        (link.path(), "succeeded", None),
    ];
    for (url, state, limit) in cases {
        let id = k.submit(&token, json!({"url": url})).await;
        let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
        assert_eq!(job["state"], state, "{job}");
        match limit {
            Some(limit) => {
                assert!(job["error"].as_str().unwrap().contains(limit), "{job}");
                // Only the logs are kept.
                assert_eq!(job["files"], json!(["stdout.log", "stderr.log"]));
            }
            None => assert_eq!(
                job["files"],
                json!(["stdout.log", "stderr.log", "output/ok.txt"])
            ),
        }
    }
    let (status, _) = k
        .file(
            &token,
            &k.submit(&token, json!({"url": link.path()})).await,
            "output/passwd",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn remote_repositories_are_cloned_once_then_fetched_and_npm_caches_are_per_user() {
    let k = Kumulus::start(Options {
        env: vec![("KUMULUS_WORKER__ALLOWED_SCHEMES".into(), "[\"git\"]".into())],
        ..Options::default()
    })
    .await;
    let ana = k.login("ana").await;
    let bob = k.login("bob").await;
    let repo = Repo::new(&[
        (
            "package.json",
            r#"{"name":"c","scripts":{"start":"echo \"$npm_config_cache\"; cat v.txt"}}"#,
        ),
        ("v.txt", "1\n"),
    ]);
    let remote = GitDaemon::serve(&repo);
    let run = |token: String| {
        let k = &k;
        let url = remote.url.clone();
        async move {
            let id = k.submit(&token, json!({"url": url})).await;
            let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
            assert_eq!(job["state"], "succeeded", "{job}");
            let (_, out) = k.file(&token, &id, "stdout.log").await;
            let out = String::from_utf8(out).unwrap();
            let (cache, version) = out.split_once('\n').unwrap();
            (cache.to_string(), version.trim().to_string())
        }
    };
    let cached = || {
        std::fs::read_dir(k.data.join("cache/git"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "git"))
            .count()
    };

    let (ana_cache, v) = run(ana.clone()).await;
    assert_eq!(v, "1");
    assert_eq!(cached(), 1, "the first job cached the repository");

    // A new commit reaches the next job: the copy is fetched into, not cloned again.
    repo.commit(&[("v.txt", "2\n")]);
    let (ana_cache_again, v) = run(ana.clone()).await;
    assert_eq!(v, "2");
    assert_eq!(cached(), 1);

    // One npm cache for all of a user's jobs, another for each other user.
    let (bob_cache, _) = run(bob.clone()).await;
    assert_eq!(ana_cache, ana_cache_again);
    assert_ne!(ana_cache, bob_cache);
    assert!(ana_cache.contains("/.npm-cache/"), "{ana_cache}");

    // A local repository is cloned directly: nothing to save by caching it.
    let local = Repo::example();
    let id = k.submit(&ana, json!({"url": local.path()})).await;
    let job = k.wait_for(&ana, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(cached(), 1);
}

#[tokio::test]
async fn ended_jobs_expire_after_retention_days_and_active_ones_stay() {
    // Jobs are kept about 2.6 s after they end; the sweep runs every second.
    let k = Kumulus::start(Options {
        env: vec![
            ("KUMULUS_RETENTION__DAYS".into(), "0.00003".into()),
            ("KUMULUS_RETENTION__SWEEP_SECS".into(), "1".into()),
        ],
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let quick = Repo::node("console.log('done');");
    let slow = Repo::node("setTimeout(() => {}, 40000);");
    let done = k.submit(&token, json!({"url": quick.path()})).await;
    let busy = k.submit(&token, json!({"url": slow.path()})).await;
    k.wait_for(&token, &done, &["succeeded"], 60).await;
    k.wait_for(&token, &busy, &["running"], 60).await;
    let mut gone = false;
    for _ in 0..60 {
        let (status, _) = k
            .call(Method::GET, &format!("/api/jobs/{done}"), &token, None)
            .await;
        if status == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(gone, "the ended job was never expired");
    let (status, _) = k.file(&token, &done, "stdout.log").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "its files went with it");
    let job = k.job(&token, &busy).await;
    assert_eq!(job["state"], "running", "{job}");
    let metrics = k.text("/metrics").await;
    assert!(
        common::metric_where(&metrics, "kumulus_jobs_removed_total", "reason=\"expired\"")
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
}

/// Submits with an `Idempotency-Key`: (status, id, replayed).
async fn submit_keyed(
    k: &Kumulus,
    token: &str,
    key: &str,
    body: serde_json::Value,
) -> (StatusCode, String, bool) {
    let resp = k
        .http
        .post(k.url("/api/jobs"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    (
        status,
        body["id"].as_str().unwrap_or_default().to_string(),
        replayed,
    )
}

#[tokio::test]
async fn a_retried_submit_with_its_idempotency_key_makes_one_job_even_across_a_restart() {
    let k = Kumulus::start(Options::default()).await;
    let ana = k.login("ana").await;
    let bob = k.login("bob").await;
    let repo = Repo::node("console.log('once');");
    let body = json!({"url": repo.path(), "args": ["a"]});
    let (status, first, replayed) = submit_keyed(&k, &ana, "order-17", body.clone()).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    // Retries, however many and at once: the same job, marked replayed.
    let retries =
        futures::future::join_all((0..5).map(|_| submit_keyed(&k, &ana, "order-17", body.clone())))
            .await;
    for (status, id, replayed) in retries {
        assert_eq!(
            (status, id.as_str(), replayed),
            (StatusCode::CREATED, first.as_str(), true)
        );
    }
    // The same key with another body is refused; another user's same key
    // is theirs.
    let other = json!({"url": repo.path(), "args": ["b"]});
    let (status, _, _) = submit_keyed(&k, &ana, "order-17", other.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, bobs, replayed) = submit_keyed(&k, &bob, "order-17", other).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    assert_ne!(bobs, first);
    // A bad key is a 400.
    let (status, _, _) = submit_keyed(&k, &ana, &"k".repeat(300), body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, list) = k.json(Method::GET, "/api/jobs", &ana, None).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");

    // Keys survive a restart.
    let k = k.restart().await;
    let ana = k.login("ana").await;
    let (status, id, replayed) = submit_keyed(&k, &ana, "order-17", body).await;
    assert_eq!(
        (status, id.as_str(), replayed),
        (StatusCode::CREATED, first.as_str(), true)
    );
    let (_, list) = k.json(Method::GET, "/api/jobs", &ana, None).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn idempotency_keys_are_forgotten_after_their_time() {
    let k = Kumulus::start(Options {
        env: vec![("KUMULUS_API__IDEMPOTENCY_TTL_SECS".into(), "1".into())],
        ..Options::default()
    })
    .await;
    let ana = k.login("ana").await;
    let repo = Repo::node("console.log('x');");
    let body = json!({"url": repo.path()});
    let (_, first, _) = submit_keyed(&k, &ana, "k1", body.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, second, replayed) = submit_keyed(&k, &ana, "k1", body).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    assert_ne!(first, second, "a key past its time is a new key");
}
