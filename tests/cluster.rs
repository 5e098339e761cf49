//! The production path: `kumulus frontend`, `kumulus worker` and
//! `kumulus autoscaler` as separate processes over the real servers
//! (Kafka protocol, MongoDB wire protocol, S3, OpenID Connect).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::cluster::{kumulus, namespace, service_env, Private, Servers};
use common::{metric, processes_with, Api, Repo};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];

#[tokio::test]
async fn the_full_flow_through_three_processes() {
    let servers = Servers::load();
    let env = service_env(&servers, &namespace());
    let frontend = kumulus("frontend", &env, &[]);
    let _worker = kumulus("worker", &env, &[("KUMULUS_WORKER__SLOTS", "2")]);
    let _autoscaler = kumulus("autoscaler", &env, &[]);
    let api = Api::new(frontend.url());
    let [(u1, p1), (u2, p2)] = servers.users();
    let ana = api.login_with(&u1, &p1).await;
    let bob = api.login_with(&u2, &p2).await;

    // Submit -> a worker runs it -> projected into MongoDB -> files from S3.
    let repo = Repo::example();
    let id = api
        .submit(
            &ana,
            json!({"url": repo.path(), "args": ["x", "y z"], "config": {"k": "v"}}),
        )
        .await;
    let job = api.wait_for(&ana, &id, &TERMINAL, 90).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["owner"], u1.as_str());
    assert!(job["worker"].is_string());
    assert_eq!(
        job["files"],
        json!(["stdout.log", "stderr.log", "output/result.json"])
    );
    let (status, stdout) = api
        .call(
            Method::GET,
            &format!("/api/jobs/{id}/files/stdout.log"),
            &ana,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8(stdout).unwrap(),
        "hello from kumulus; args: [\"x\",\"y z\"]\nwrote output/result.json\n"
    );
    let (_, result) = api
        .call(
            Method::GET,
            &format!("/api/jobs/{id}/files/output/result.json"),
            &ana,
            None,
        )
        .await;
    let result: Value = serde_json::from_slice(&result).unwrap();
    assert_eq!(result["config"], json!({"k": "v"}));

    // Another user sees nothing of it.
    for path in [
        format!("/api/jobs/{id}"),
        format!("/api/jobs/{id}/files/stdout.log"),
        format!("/api/status/{id}"),
    ] {
        let (status, _) = api.call(Method::GET, &path, &bob, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, list) = api.json(Method::GET, "/api/jobs", &bob, None).await;
    assert_eq!(list["jobs"], json!([]));

    // Cancel a running job: its processes go away.
    let marker = format!("kumulus-cluster-cancel-{}", std::process::id());
    let sleeper = Repo::node("setInterval(() => {}, 1000);");
    let running = api
        .submit(
            &ana,
            json!({"url": sleeper.path(), "args": [marker.clone()]}),
        )
        .await;
    api.wait_for(&ana, &running, &["running"], 60).await;
    common::eventually(30, "the job's process", || {
        !processes_with(&marker).is_empty()
    })
    .await;
    let (status, rec) = api
        .json(
            Method::POST,
            &format!("/api/jobs/{running}/cancel"),
            &ana,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{rec}");
    assert_eq!(rec["state"], "cancelled");
    common::eventually(15, "the cancelled job's processes to end", || {
        processes_with(&marker).is_empty()
    })
    .await;

    // The seed's routes over the same stack.
    let resp = api
        .http
        .get(format!("{}/auth/{u1}/{p1}", api.base))
        .send()
        .await
        .unwrap();
    let seed_token = resp.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = api
        .json(
            Method::POST,
            "/api/addJob",
            &seed_token,
            Some(json!({"url": repo.path(), "args": "uno"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seed_id = body["jobId"].as_str().unwrap().to_string();
    api.wait_for(&ana, &seed_id, &["succeeded"], 90).await;
    let (_, status_body) = api
        .json(
            Method::GET,
            &format!("/api/status/{seed_id}"),
            &seed_token,
            None,
        )
        .await;
    assert_eq!(status_body["status"], "Finalizado");
    let (status, bytes) = api
        .call(
            Method::GET,
            &format!("/api/results/{seed_id}/result.json"),
            &seed_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap()["args"],
        json!(["uno"])
    );
    // Deleting the ended job removes its record (MongoDB) and files (S3).
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/api/deleteJob/{seed_id}"),
            &seed_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        format!("/api/status/{seed_id}"),
        format!("/api/results/{seed_id}/result.json"),
    ] {
        let (status, _) = api.call(Method::GET, &path, &seed_token, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} after the delete");
    }
    let (status, _) = api
        .call(Method::DELETE, &format!("/api/jobs/{id}"), &ana, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/api/jobs/{id}/files/stdout.log"),
            &ana,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The autoscaler's observations reach /health/load.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (arrivals, observations) = api.observed_arrivals().await;
        if arrivals >= 1.0 {
            assert!(observations <= 10);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no observation with arrivals in {observations} observations"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn two_workers_split_the_partitions_and_both_run_jobs() {
    let servers = Servers::load();
    let env = service_env(&servers, &namespace());
    let one = [
        ("KUMULUS_WORKER__SLOTS", "1"),
        ("KUMULUS_KAFKA__JOBS_PARTITIONS", "4"),
    ];
    // The frontend places jobs by backlog (every other test runs the
    // default hash), and says so on its metrics for `kumulus load`.
    let frontend = kumulus(
        "frontend",
        &env,
        &[
            one[0],
            one[1],
            ("KUMULUS_KAFKA__PLACEMENT", "least-backlog"),
        ],
    );
    let _w1 = kumulus(
        "worker",
        &env,
        &[one[0], one[1], ("KUMULUS_WORKER__ID", "w1")],
    );
    let _w2 = kumulus(
        "worker",
        &env,
        &[one[0], one[1], ("KUMULUS_WORKER__ID", "w2")],
    );
    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::node("setTimeout(() => console.log('done'), 1500);");
    // Waves of jobs until both workers have run some (the group may take a
    // moment to hand the second member its partitions).
    let mut workers = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while workers.len() < 2 {
        assert!(Instant::now() < deadline, "only {workers:?} ran jobs");
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(api.submit(&token, json!({"url": repo.path()})).await);
        }
        for id in &ids {
            let job = api.wait_for(&token, id, &TERMINAL, 120).await;
            assert_eq!(job["state"], "succeeded", "{job}");
            workers.insert(job["worker"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        workers,
        BTreeSet::from(["w1".to_string(), "w2".to_string()])
    );
    let metrics = api.text("/metrics").await;
    assert_eq!(
        common::metric_where(
            &metrics,
            "kumulus_api_placement_info",
            "placement=\"least-backlog\""
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_job_never_leaves_it_running() {
    let servers = Servers::load();
    let env = service_env(&servers, &namespace());
    let opts = [
        ("KUMULUS_WORKER__SLOTS", "1"),
        ("KUMULUS_KAFKA__JOBS_PARTITIONS", "2"),
        ("KUMULUS_WORKER__HEARTBEAT_SECS", "1"),
    ];
    let frontend = kumulus("frontend", &env, &opts);
    let mut w1 = kumulus(
        "worker",
        &env,
        &[opts[0], opts[1], opts[2], ("KUMULUS_WORKER__ID", "w1")],
    );
    let mut w2 = kumulus(
        "worker",
        &env,
        &[opts[0], opts[1], opts[2], ("KUMULUS_WORKER__ID", "w2")],
    );
    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::node("setTimeout(() => console.log('survived'), 4000);");
    let id = api.submit(&token, json!({"url": repo.path()})).await;
    let job = api.wait_for(&token, &id, &["running"], 60).await;
    let victim_id = job["worker"].as_str().unwrap().to_string();
    let victim = if victim_id == "w1" { &mut w1 } else { &mut w2 };
    victim.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = victim.child.wait();
    // Nobody replaces it: the survivor ends the job.
    let job = api.wait_for(&token, &id, &TERMINAL, 120).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_ne!(job["worker"], victim_id.as_str(), "{job}");
}

#[tokio::test]
async fn every_accepted_job_ends_across_a_broker_restart() {
    let servers = Servers::load();
    let mut broker = Private::start(&servers, "kafka", &[]);
    let mut env = service_env(&servers, &namespace());
    for (k, v) in env.iter_mut() {
        if k == "KUMULUS_KAFKA__BROKERS" {
            *v = broker.addr();
        }
    }
    let frontend = kumulus("frontend", &env, &[]);
    let _worker = kumulus("worker", &env, &[("KUMULUS_WORKER__SLOTS", "2")]);
    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::node("console.log('ok');");
    let mut accepted = Vec::new();
    for _ in 0..5 {
        accepted.push(api.submit(&token, json!({"url": repo.path()})).await);
    }
    // The broker goes down: the API answers 503 instead of hanging, and the
    // job does not exist. Each stand-in loses acknowledged writes one way,
    // where real Kafka with acks=all loses them neither way: tansu in its
    // graceful shutdown (so it is killed), noida-db when killed (so it is
    // stopped with SIGTERM, after which it keeps its data).
    let signal = if servers.get("KAFKA_SERVER") == "tansu" {
        nix::sys::signal::Signal::SIGKILL
    } else {
        nix::sys::signal::Signal::SIGTERM
    };
    broker.proc.signal(signal);
    let _ = broker.proc.child.wait();
    let (status, body) = api
        .json(
            Method::POST,
            "/api/jobs",
            &token,
            Some(json!({"url": repo.path()})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let (_, list) = api
        .json(Method::GET, "/api/jobs?limit=100", &token, None)
        .await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), accepted.len());
    // Back up: everything reconnects by itself.
    broker.restart(&servers, Duration::from_millis(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.len() < 10 {
        let (status, v) = api
            .json(
                Method::POST,
                "/api/jobs",
                &token,
                Some(json!({"url": repo.path()})),
            )
            .await;
        match status {
            StatusCode::CREATED => accepted.push(v["id"].as_str().unwrap().to_string()),
            StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(Duration::from_millis(500)).await,
            other => panic!("unexpected {other}: {v}"),
        }
        assert!(Instant::now() < deadline, "the frontend never reconnected");
    }
    for id in &accepted {
        let job = api.wait_for(&token, id, &TERMINAL, 180).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
}

#[tokio::test]
async fn tokens_from_elsewhere_or_expired_get_401() {
    let servers = Servers::load();
    let [(u1, p1), _] = servers.users();
    let users = format!("{u1}:{p1}");
    // Our provider issues short-lived tokens; another provider is another issuer.
    let ours = Private::start(&servers, "oidc", &[("OIDC_TTL", "2")]);
    let other = Private::start(&servers, "oidc", &[]);
    let issuer = |p: &Private| format!("http://127.0.0.1:{}/realms/kumulus", p.port);
    let mut env = service_env(&servers, &namespace());
    env.retain(|(k, _)| k != "KUMULUS_OIDC__ISSUER");
    env.push(("KUMULUS_OIDC__ISSUER".into(), issuer(&ours)));
    let frontend = kumulus("frontend", &env, &[]);
    let other_audience = kumulus(
        "frontend",
        &env,
        &[("KUMULUS_OIDC__AUDIENCE", "someone-else")],
    );
    let api = Api::new(frontend.url());
    let _ = users;

    let token = api.login_with(&u1, &p1).await;
    let (status, _) = api.call(Method::GET, "/api/jobs", &token, None).await;
    assert_eq!(status, StatusCode::OK);

    // Same provider, but this frontend expects another audience.
    let (status, body) = Api::new(other_audience.url())
        .json(Method::GET, "/api/jobs", &token, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A valid token of another issuer.
    let mut other_env = env.clone();
    other_env.retain(|(k, _)| k != "KUMULUS_OIDC__ISSUER");
    other_env.push(("KUMULUS_OIDC__ISSUER".into(), issuer(&other)));
    let other_frontend = kumulus("frontend", &other_env, &[]);
    let foreign = Api::new(other_frontend.url()).login_with(&u1, &p1).await;
    let (status, _) = api.call(Method::GET, "/api/jobs", &foreign, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Unsigned: the same claims with alg none.
    let payload = token.split('.').nth(1).unwrap();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let (status, _) = api.call(Method::GET, "/api/jobs", &unsigned, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Expired (2 s lifetime, 5 s leeway).
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (status, body) = api.json(Method::GET, "/api/jobs", &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn the_autoscaler_decides_from_the_lag_and_caps_at_the_partitions() {
    let servers = Servers::load();
    let env = service_env(&servers, &namespace());
    let frontend = kumulus("frontend", &env, &[]);
    let autoscaler = kumulus(
        "autoscaler",
        &env,
        &[
            ("KUMULUS_AUTOSCALER__LISTEN", "127.0.0.1:0"),
            ("KUMULUS_AUTOSCALER__POLICY", "lag"),
            ("KUMULUS_AUTOSCALER__LAG_THRESHOLD", "2"),
            ("KUMULUS_AUTOSCALER__MAX_WORKERS", "5"),
            ("KUMULUS_AUTOSCALER__DRIVER", "dry-run"),
        ],
    );
    let metrics_url = autoscaler
        .line
        .split("metrics on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::node("console.log('never runs: no workers');");
    // No worker runs: every job waits.
    for _ in 0..12 {
        api.submit(&token, json!({"url": repo.path()})).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = api
            .http
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lag = metric(&text, "kumulus_consumer_lag");
        let up = common::metric_where(&text, "kumulus_scale_decisions_total", "direction=\"up\"");
        let desired = metric(&text, "kumulus_workers_desired");
        let partitions = metric(&text, "kumulus_kafka_partitions");
        // KEDA's rule: ceil(12 / 2) = 6, within max_workers = 5; never more
        // workers than partitions: tansu cannot add any (so 2 workers on its
        // 2), noida-db can (5 workers, partitions grown to 5 x 2).
        let grows = servers.get("KAFKA_SERVER") != "tansu";
        let (want_desired, want_partitions) = if grows { (5.0, 10.0) } else { (2.0, 2.0) };
        if lag == Some(12.0)
            && up.unwrap_or(0.0) >= 1.0
            && desired == Some(want_desired)
            && partitions == Some(want_partitions)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no such decision yet:\n{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn production_refuses_local_and_malicious_repositories_with_422() {
    let servers = Servers::load();
    // Production defaults: https only, no local repositories.
    let mut env = service_env(&servers, &namespace());
    env.retain(|(k, _)| k != "KUMULUS_WORKER__ALLOW_LOCAL_REPOS");
    let frontend = kumulus("frontend", &env, &[]);
    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::example();
    let refused = [
        format!("file://{}", repo.path()),
        repo.path(),
        "http://example.com/r.git".to_string(),
        "-uevil".to_string(),
        "--upload-pack=touch /tmp/kumulus-pwned".to_string(),
        "ext::sh -c touch% /tmp/kumulus-pwned".to_string(),
        "git@example.com:x/y.git".to_string(),
    ];
    for url in refused {
        let (status, body) = api
            .json(Method::POST, "/api/jobs", &token, Some(json!({"url": url})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    }
    // Nothing was accepted.
    let (_, list) = api.json(Method::GET, "/api/jobs", &token, None).await;
    assert_eq!(list["jobs"], json!([]), "{list}");
}

#[tokio::test]
async fn a_fresh_frontends_first_requests_wait_for_the_providers_keys() {
    let servers = Servers::load();
    let env = service_env(&servers, &namespace());
    let frontend = kumulus("frontend", &env, &[]);
    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    // Logging in does not load the keys; the first checks of a token do.
    let token = api.login_with(&u1, &p1).await;
    let mut calls = Vec::new();
    for _ in 0..16 {
        let (url, token) = (api.url("/api/jobs"), token.clone());
        calls.push(tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
}

/// The `process` platform driver on real `kumulus worker` processes: it
/// starts N, scaling down drains them (a running job finishes or is queued
/// again, none is lost), and a SIGKILLed worker no longer counts and is
/// replaced by the next apply.
#[tokio::test]
async fn the_process_driver_starts_drains_and_replaces_workers() {
    use kumulus_autoscaler::driver::process::{OnStop, ProcessDriver, ProcessSettings};
    use kumulus_core::ports::ScalingPlatform;

    let servers = Servers::load();
    let mut env = service_env(&servers, &namespace());
    for (k, v) in [
        ("KUMULUS_WORKER__SLOTS", "1"),
        ("KUMULUS_WORKER__HEARTBEAT_SECS", "1"),
        ("KUMULUS_WORKER__SHUTDOWN_GRACE_SECS", "1"),
        ("KUMULUS_KAFKA__JOBS_PARTITIONS", "4"),
        ("KUMULUS_LOG", "info"),
    ] {
        env.push((k.into(), v.into()));
    }
    let data = std::env::temp_dir().join("kumulus-test-data");
    env.push(("KUMULUS_DATA_DIR".into(), data.display().to_string()));
    let frontend = kumulus("frontend", &env, &[]);
    let logs = tempfile::tempdir().unwrap();
    let logs_path = logs.path().to_path_buf();
    let _dump = common::cluster::LogsOnFailure(logs_path.clone());
    let driver = ProcessDriver::new(ProcessSettings {
        program: common::bin().into(),
        args: vec!["worker".into()],
        env: env.clone(),
        log_dir: logs_path.clone(),
        id_prefix: "pw".into(),
        on_stop: OnStop::Stop,
        drain: Duration::from_secs(20),
    })
    .unwrap();
    assert!(driver.counts_running());
    driver.apply(3).await.unwrap();
    assert_eq!(driver.current().await.unwrap(), 3);
    assert_eq!(driver.running(), ["pw-1", "pw-2", "pw-3"]);

    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::node("setTimeout(() => console.log('done'), 3000);");
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(api.submit(&token, json!({"url": repo.path()})).await);
    }
    // Scale down while jobs run: the two newest drain.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, list) = api.json(Method::GET, "/api/jobs", &token, None).await;
        let running = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["state"] == "running")
            .count();
        if running >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the workers never ran jobs");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    driver.apply(1).await.unwrap();
    assert_eq!(driver.current().await.unwrap(), 1);
    assert_eq!(driver.running(), ["pw-1"]);
    for id in &ids {
        let job = api.wait_for(&token, id, &TERMINAL, 180).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let (_, out) = api.file(&token, id, "stdout.log").await;
        assert_eq!(String::from_utf8_lossy(&out), "done\n", "{job}");
    }
    // The drained workers left cleanly and wrote their logs.
    for id in ["pw-2", "pw-3"] {
        let log = std::fs::read_to_string(logs_path.join(format!("{id}.log"))).unwrap();
        assert!(log.contains("worker stopped"), "{id}: {log}");
    }

    // A SIGKILLed worker no longer counts; the next apply replaces it.
    let pid = driver.pids()[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while driver.current().await.unwrap() != 0 {
        assert!(Instant::now() < deadline, "the dead worker still counts");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver.apply(1).await.unwrap();
    assert_eq!(driver.running(), ["pw-4"]);
    // On tansu the replacement takes the work. noida-db keeps a killed
    // sole member as the group's leader for good once a new member joins
    // (its SyncGroup answers "rebalance in progress" forever), so there
    // the replacement may get no partition (RELIABILITY.md, "What the
    // stand-in servers do"). The degraded behaviour checked there: the job
    // is accepted and held, queued and unharmed (not failed, not lost),
    // and its user can still cancel it; or it runs on the replacement.
    let id = api.submit(&token, json!({"url": repo.path()})).await;
    let on_noida = servers.get("KAFKA_SERVER") == "noida";
    let deadline = Instant::now() + Duration::from_secs(if on_noida { 30 } else { 120 });
    let job = loop {
        let job = api.job(&token, &id).await;
        if TERMINAL.iter().any(|s| job["state"] == *s) || Instant::now() >= deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if job["state"] == "succeeded" {
        assert_eq!(job["worker"], "pw-4", "{job}");
    } else {
        assert!(on_noida, "the replacement never ran the job: {job}");
        eprintln!("noida-db gave the replacement no partition: the job is held queued");
        assert_eq!(job["state"], "queued", "{job}");
        assert_eq!(job["infrastructure_failure"], false, "{job}");
        let (status, body) = api
            .json(
                Method::POST,
                &format!("/api/jobs/{id}/cancel"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let job = api.wait_for(&token, &id, &TERMINAL, 30).await;
        assert_eq!(job["state"], "cancelled", "{job}");
    }

    // The autoscaler stops: its workers stop with it.
    let pids = driver.pids();
    driver.close().await;
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} outlived close()"
        );
    }
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_a_loaded_cluster() {
    let servers = Servers::load();
    let mut env = service_env(&servers, &namespace());
    for (k, v) in [
        ("KUMULUS_WORKER__SLOTS", "1"),
        ("KUMULUS_WORKER__HEARTBEAT_SECS", "1"),
        ("KUMULUS_KAFKA__JOBS_PARTITIONS", "4"),
    ] {
        env.push((k.into(), v.into()));
    }
    let frontend = kumulus("frontend", &env, &[]);
    let frontend_port = frontend.url().rsplit(':').next().unwrap().to_string();
    let autoscaler_port = common::cluster::free_port().to_string();
    let logs = tempfile::tempdir().unwrap();
    let _dump = common::cluster::LogsOnFailure(logs.path().to_path_buf());
    let listen = format!("127.0.0.1:{autoscaler_port}");
    let log_dir = logs.path().display().to_string();
    // The autoscaler scales real worker processes (the process driver)
    // from one up to three, on a short period, measuring their start-up.
    let mut autoscaler = kumulus(
        "autoscaler",
        &env,
        &[
            ("KUMULUS_AUTOSCALER__LISTEN", listen.as_str()),
            ("KUMULUS_AUTOSCALER__DRIVER", "process"),
            ("KUMULUS_AUTOSCALER__PROCESS_LOG_DIR", log_dir.as_str()),
            ("KUMULUS_AUTOSCALER__PROCESS_ON_STOP", "stop"),
            ("KUMULUS_AUTOSCALER__POLICY", "lag"),
            ("KUMULUS_AUTOSCALER__LAG_THRESHOLD", "2"),
            ("KUMULUS_AUTOSCALER__MIN_WORKERS", "1"),
            ("KUMULUS_AUTOSCALER__MAX_WORKERS", "3"),
            ("KUMULUS_AUTOSCALER__COOLDOWN_SECS", "5"),
            ("KUMULUS_AUTOSCALER__STARTUP_SECS", "measured"),
            ("KUMULUS_AUTOSCALER__REBALANCE_SECS", "measured"),
            ("KUMULUS_LOG", "info"),
        ],
    );
    let prometheus = Private::start(
        &servers,
        "prometheus",
        &[
            ("FRONTEND_PORT", frontend_port.as_str()),
            ("AUTOSCALER_PORT", autoscaler_port.as_str()),
        ],
    );
    let prom = format!("http://127.0.0.1:{}", prometheus.port);

    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::node("setTimeout(() => console.log('done'), 2000);");
    let queries = common::dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    // The first worker joins before the load starts, as a running
    // cluster's would have: the load then grows the group, and its
    // rebalances are measured. (Loaded from the start, the pool may go
    // from none to its maximum at once, in one join and no rebalance.)
    let joined = Instant::now() + Duration::from_secs(120);
    let assigned = || {
        std::fs::read_dir(logs.path())
            .into_iter()
            .flatten()
            .flatten()
            .any(|f| {
                std::fs::read_to_string(f.path())
                    .is_ok_and(|log| log.contains("partitions assigned"))
            })
    };
    while !assigned() {
        assert!(Instant::now() < joined, "no worker joined the group");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Waves of jobs keep the cluster loaded (and scaling) until every
    // query has answered with a number, or the deadline.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut answered: BTreeSet<String> = BTreeSet::new();
    let mut ids = Vec::new();
    loop {
        if ids.len() < 120 {
            for _ in 0..6 {
                ids.push(api.submit(&token, json!({"url": repo.path()})).await);
            }
        }
        for (_, expr) in &queries {
            if answered.contains(expr) {
                continue;
            }
            let Ok(resp) = api
                .http
                .get(format!("{prom}/api/v1/query"))
                .query(&[("query", expr.as_str())])
                .send()
                .await
            else {
                continue;
            };
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(body["status"], "error", "{expr}: {body}");
            let has_number = body["data"]["result"].as_array().is_some_and(|r| {
                r.iter().any(|s| {
                    s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(f64::is_finite)
                })
            });
            if has_number {
                answered.insert(expr.clone());
            }
        }
        if answered.len() == queries.len() {
            break;
        }
        let missing: Vec<&(String, String)> = queries
            .iter()
            .filter(|(_, e)| !answered.contains(e))
            .collect();
        assert!(
            Instant::now() < deadline,
            "panel queries without data from the live Prometheus: {missing:?}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // The load also went through: the jobs end.
    for id in ids.iter().take(6) {
        let job = api.wait_for(&token, id, &TERMINAL, 240).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    autoscaler.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = autoscaler.child.wait();
}

#[tokio::test]
async fn ended_jobs_expire_with_their_files_and_running_ones_stay() {
    let servers = Servers::load();
    let env = service_env(&servers, &namespace());
    // Jobs are kept about 2.6 s after they end; the sweep runs every second.
    let frontend = kumulus(
        "frontend",
        &env,
        &[
            ("KUMULUS_RETENTION__DAYS", "0.00003"),
            ("KUMULUS_RETENTION__SWEEP_SECS", "1"),
        ],
    );
    let _worker = kumulus("worker", &env, &[("KUMULUS_WORKER__SLOTS", "2")]);
    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let ana = api.login_with(&u1, &p1).await;
    let quick = Repo::example();
    let slow = Repo::node("setTimeout(() => {}, 40000);");
    let done = api.submit(&ana, json!({"url": quick.path()})).await;
    let busy = api.submit(&ana, json!({"url": slow.path()})).await;
    api.wait_for(&ana, &done, &["succeeded"], 90).await;
    api.wait_for(&ana, &busy, &["running"], 90).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = api
            .call(Method::GET, &format!("/api/jobs/{done}"), &ana, None)
            .await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "the ended job was never expired");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/api/jobs/{done}/files/stdout.log"),
            &ana,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "its files went with it");
    let (status, job) = api
        .json(Method::GET, &format!("/api/jobs/{busy}"), &ana, None)
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (StatusCode::OK, Some("running"))
    );
    let metrics = api.text("/metrics").await;
    assert!(
        common::metric_where(&metrics, "kumulus_jobs_removed_total", "reason=\"expired\"")
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let (status, _) = api
        .call(Method::DELETE, &format!("/api/jobs/{busy}"), &ana, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn racing_submits_with_one_idempotency_key_make_one_job_in_mongodb() {
    let servers = Servers::load();
    let env = service_env(&servers, &namespace());
    // Two frontends on one store: the key is shared by both.
    let fronts = [
        kumulus("frontend", &env, &[]),
        kumulus("frontend", &env, &[]),
    ];
    let apis: Vec<Api> = fronts.iter().map(|f| Api::new(f.url())).collect();
    let [(u1, p1), _] = servers.users();
    let ana = apis[0].login_with(&u1, &p1).await;
    let repo = Repo::example();
    let body = json!({"url": repo.path()});
    let send = |api: &Api| {
        let req = api
            .http
            .post(format!("{}/api/jobs", api.base))
            .bearer_auth(&ana)
            .header("idempotency-key", "batch-2026-12-01")
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or_default();
            (status, v["id"].as_str().unwrap_or_default().to_string())
        }
    };
    let answers = futures::future::join_all((0..8).map(|i| send(&apis[i % 2]))).await;
    // Each is the one job, or (while the first is still being made) a 409
    // that a retry resolves.
    let ids: BTreeSet<String> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, _)| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{answers:?}"
    );
    let (status, again) = send(&apis[1]).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(ids.contains(&again));
    let (_, list) = apis[0].json(Method::GET, "/api/jobs", &ana, None).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn with_two_frontends_a_webhook_is_delivered_once() {
    let servers = Servers::load();
    let env = service_env(&servers, &namespace());
    let hooks: [(&str, &str); 4] = [
        ("KUMULUS_WEBHOOKS__SECRET", "whsec-cluster"),
        ("KUMULUS_WEBHOOKS__ALLOW_HTTP", "true"),
        ("KUMULUS_WEBHOOKS__ALLOW_PRIVATE", "true"),
        ("KUMULUS_WEBHOOKS__POLL_MS", "200"),
    ];
    let fronts = [
        kumulus("frontend", &env, &hooks),
        kumulus("frontend", &env, &hooks),
    ];
    let _worker = kumulus("worker", &env, &[]);
    let api = Api::new(fronts[0].url());
    let [(u1, p1), _] = servers.users();
    let ana = api.login_with(&u1, &p1).await;
    let hook = common::Receiver::start(vec![200]).await;
    let repo = Repo::example();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let body = json!({
            "url": repo.path(),
            "callback_url": format!("http://127.0.0.1:{}/hook", hook.port),
        });
        ids.push(api.submit(&ana, body).await);
    }
    for id in &ids {
        api.wait_for(&ana, id, &["succeeded"], 90).await;
    }
    common::eventually(30, "a delivery per job", || hook.count() >= ids.len()).await;
    // Time for a second frontend's delivery, were there one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let delivered: Vec<String> = hook
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _)| h["webhook-id"].clone())
        .collect();
    let unique: BTreeSet<&String> = delivered.iter().collect();
    assert_eq!((delivered.len(), unique.len()), (3, 3), "{delivered:?}");
    for id in &ids {
        let job = api.job(&ana, id).await;
        assert_eq!(job["webhook"]["state"], "delivered", "{job}");
        assert_eq!(job["webhook"]["attempts"], 1, "{job}");
    }
}

#[tokio::test]
async fn a_running_jobs_logs_reach_a_follower_on_another_frontend() {
    let servers = Servers::load();
    let env = service_env(&servers, &namespace());
    let fronts = [
        kumulus("frontend", &env, &[]),
        kumulus("frontend", &env, &[]),
    ];
    let _worker = kumulus("worker", &env, &[]);
    let [(u1, p1), _] = servers.users();
    let submit_on = kumulus_client::Client::new(&fronts[0].url())
        .unwrap()
        .login(&u1, &p1)
        .await
        .unwrap();
    let follow_on = kumulus_client::Client::new(&fronts[1].url())
        .unwrap()
        .session(submit_on.token());
    // A line every 200 ms, 20 in all.
    let repo = Repo::node(
        "let i = 0; const t = setInterval(() => { i++; console.log(`line ${i}`); if (i === 20) clearInterval(t); }, 200);",
    );
    let id = submit_on
        .submit(&kumulus_client::NewJob::repo(repo.path()))
        .await
        .unwrap()
        .id;
    let mut events = follow_on.logs(&id, true).await.unwrap();
    let mut text = String::new();
    let mut live = false;
    let mut end = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(90), events.next())
        .await
        .expect("an event")
        .unwrap()
    {
        match event {
            kumulus_client::LogEvent::Output(c) => {
                assert_eq!(c.offset as usize, text.len(), "in order, nothing twice");
                if text.is_empty() {
                    // The first output came while the job still ran: live,
                    // from the worker through the job-logs topic.
                    live = follow_on.job(&id).await.unwrap().state
                        == kumulus_client::JobState::Running;
                }
                text.push_str(&c.text);
            }
            kumulus_client::LogEvent::End(job) => end = Some(job.state),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(live, "the output came while the job ran");
    let want: String = (1..=20).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, want);
    assert_eq!(end, Some(kumulus_client::JobState::Succeeded));
}

#[tokio::test]
async fn the_cli_and_the_web_ui_work_against_the_cluster() {
    use common::browser::Browser;
    use common::cli::Cli;
    let servers = Servers::load();
    let env = service_env(&servers, &namespace());
    let frontend = kumulus("frontend", &env, &[]);
    let _worker = kumulus("worker", &env, &[]);
    let _autoscaler = kumulus(
        "autoscaler",
        &env,
        &[
            ("KUMULUS_AUTOSCALER__LISTEN", "127.0.0.1:0"),
            ("KUMULUS_AUTOSCALER__DRIVER", "dry-run"),
        ],
    );
    let [(user, password), _] = servers.users();

    // The CLI: log in against the provider, submit the example and wait
    // for it (exit 0), list it, download its output.
    let cli = Cli::new();
    let r = cli.run_with(
        &["login", &frontend.url(), "--user", &user],
        &format!("{password}\n"),
    );
    assert_eq!(r.code, 0, "{}", r.err);
    let repo = Repo::example();
    let r = cli.run(&[
        "submit",
        &repo.path(),
        "-a",
        "from",
        "the",
        "cli",
        "--wait",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let job: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let jobs: Value = serde_json::from_str(&cli.ok(&["jobs", "--json"])).unwrap();
    assert!(
        jobs.as_array().unwrap().iter().any(|j| j["id"] == id),
        "{jobs}"
    );
    let dir = tempfile::tempdir().unwrap();
    cli.ok(&["download", &id, "-o", dir.path().to_str().unwrap()]);
    let result: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("output/result.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(result["args"], json!(["from", "the", "cli"]));

    // The web UI, same user: the job's page, its log, and the autoscaler's
    // page with the cluster autoscaler's decisions.
    let b = Browser::open(&frontend.url()).await;
    b.log_in(&user, &password).await;
    b.text_until(&format!(r#"tr[data-id="{id}"]"#), 20, |t| {
        t.contains("succeeded")
    })
    .await;
    b.go(&format!("#/jobs/{id}")).await;
    b.text_until("#logs", 20, |t| t.contains(r#"args: ["from","the","cli"]"#))
        .await;
    b.go("#/autoscaler").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.points("#chart-workers").await < 2 {
        assert!(
            Instant::now() < deadline,
            "no decisions on the autoscaler page"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let table = b.text_until("#decisions-body", 10, |t| !t.is_empty()).await;
    assert!(!table.is_empty());
}
