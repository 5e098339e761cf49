//! Faults that no replacement hides, on both Kafka-protocol brokers (tansu
//! and noida-db, each a private one per test): a worker killed and never
//! replaced, a worker paused past its lease and resumed. Nothing here
//! restarts what it broke; the product has to recover by itself.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::cluster::{kumulus, namespace, service_env, Private, Proc, Servers};
use common::{Api, Repo};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];

/// A private broker of kind `kind` and the services' settings on it, with
/// short leases (1 s heartbeats, 3 missed) so that the tests stay short.
fn setup(servers: &Servers, kind: &str) -> (Private, Vec<(String, String)>) {
    let broker = Private::start(servers, "kafka", &[("KUMULUS_KAFKA_SERVER", kind)]);
    let mut env = service_env(servers, &namespace());
    for (k, v) in env.iter_mut() {
        if k == "KUMULUS_KAFKA__BROKERS" {
            *v = broker.addr();
        }
    }
    for (k, v) in [
        ("KUMULUS_WORKER__HEARTBEAT_SECS", "1"),
        ("KUMULUS_WORKER__LEASE_MISSED_HEARTBEATS", "3"),
        ("KUMULUS_WORKER__SLOTS", "1"),
        ("KUMULUS_KAFKA__JOBS_PARTITIONS", "2"),
    ] {
        env.push((k.into(), v.into()));
    }
    (broker, env)
}

fn worker(env: &[(String, String)], id: &str) -> Proc {
    kumulus("worker", env, &[("KUMULUS_WORKER__ID", id)])
}

async fn wait_all(api: &Api, token: &str, ids: &[String], secs: u64) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        out.push(api.wait_for(token, id, &TERMINAL, secs).await);
    }
    out
}

/// Two workers, four jobs; the worker running the first job is killed
/// and never replaced. Every job ends, the killed worker's ones on the
/// survivor, each with one final state.
async fn a_killed_worker_that_nobody_replaces(kind: &str) {
    let servers = Servers::load();
    let (_broker, env) = setup(&servers, kind);
    let frontend = kumulus("frontend", &env, &[]);
    let mut w1 = worker(&env, "w1");
    let mut w2 = worker(&env, "w2");
    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::node("setTimeout(() => console.log('done'), 3000);");
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(api.submit(&token, json!({"url": repo.path()})).await);
    }
    let first = api.wait_for(&token, &ids[0], &["running"], 90).await;
    let victim = first["worker"].as_str().unwrap().to_string();
    let (dead, survivor) = if victim == "w1" {
        (&mut w1, "w2")
    } else {
        (&mut w2, "w1")
    };
    dead.signal(Signal::SIGKILL);
    let _ = dead.child.wait();
    let killed_at = chrono::Utc::now();

    let jobs = wait_all(&api, &token, &ids, 180).await;
    for job in &jobs {
        assert_eq!(job["state"], "succeeded", "{job}");
        let finished: chrono::DateTime<chrono::Utc> =
            job["finished_at"].as_str().unwrap().parse().unwrap();
        if finished > killed_at {
            assert_eq!(job["worker"], survivor, "{job}");
        }
    }
    // The job the dead worker held was given up and run again.
    let first = &jobs[0];
    assert!(first["attempt"].as_u64().unwrap() >= 2, "{first}");
    let attempts = first["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["worker"], victim.as_str(), "{first}");
    assert!(
        attempts[0]["ended"]
            .as_str()
            .unwrap_or("")
            .contains("lease"),
        "{first}"
    );
    let (_, out) = api.file(&token, &ids[0], "stdout.log").await;
    assert_eq!(String::from_utf8_lossy(&out), "done\n");
}

#[tokio::test]
async fn a_killed_worker_that_nobody_replaces_on_tansu() {
    a_killed_worker_that_nobody_replaces("tansu").await;
}

#[tokio::test]
async fn a_killed_worker_that_nobody_replaces_on_noida() {
    a_killed_worker_that_nobody_replaces("noida").await;
}

/// A worker paused (SIGSTOP) past its lease while it runs a job, then
/// resumed: the job was given up and run elsewhere; the resumed worker
/// stops its superseded attempt; one final state, the live attempt's files.
async fn a_paused_worker_wakes_up_fenced(kind: &str) {
    let servers = Servers::load();
    let (_broker, env) = setup(&servers, kind);
    let frontend = kumulus("frontend", &env, &[]);
    let mut w1 = worker(&env, "w1");
    let mut w2 = worker(&env, "w2");
    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    // Prints which attempt ran it: its worker's pid namespace hides the
    // worker, so the attempt number is what tells the runs apart.
    let repo =
        Repo::node("const t = Date.now(); setTimeout(() => console.log('ran at ' + t), 4000);");
    let id = api.submit(&token, json!({"url": repo.path()})).await;
    let running = api.wait_for(&token, &id, &["running"], 90).await;
    let paused_id = running["worker"].as_str().unwrap().to_string();
    let paused = if paused_id == "w1" { &mut w1 } else { &mut w2 };
    paused.signal(Signal::SIGSTOP);
    // Past its lease the job is queued again and runs on the other worker
    // (or the broker, giving up on the paused member first, hands the
    // other worker its message: then that worker takes the attempt over).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = api.job(&token, &id).await;
        if job["attempt"].as_u64().unwrap_or(1) >= 2 || job["worker"] != paused_id.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "never given up: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    paused.signal(Signal::SIGCONT);
    let job = api.wait_for(&token, &id, &TERMINAL, 120).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_ne!(job["worker"], paused_id.as_str(), "{job}");
    let (_, out) = api.file(&token, &id, "stdout.log").await;
    let shown = String::from_utf8_lossy(&out).to_string();
    // Give the woken attempt time to finish what it would have.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = api.job(&token, &id).await;
    assert_eq!(after, job, "the record changed after its final state");
    let (_, again) = api.file(&token, &id, "stdout.log").await;
    assert_eq!(String::from_utf8_lossy(&again), shown, "files replaced");
    assert!(shown.starts_with("ran at "), "{shown}");
}

#[tokio::test]
async fn a_paused_worker_wakes_up_fenced_on_tansu() {
    a_paused_worker_wakes_up_fenced("tansu").await;
}

#[tokio::test]
async fn a_paused_worker_wakes_up_fenced_on_noida() {
    a_paused_worker_wakes_up_fenced("noida").await;
}
