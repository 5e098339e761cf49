//! Faults that no replacement hides, on both Kafka-protocol brokers (tansu
//! and noida-db, each a private one per test): a worker killed and never
//! replaced, a worker paused past its lease and resumed. Nothing here
//! restarts what it broke; the product has to recover by itself.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::cluster::{kumulus, namespace, service_env, Private, Proc, Servers};
use common::{report, Api, Repo};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];

/// A test module `$name` with the scenario run on each broker:
/// `$name::on_tansu` and `$name::on_noida`.
macro_rules! on_both_brokers {
    ($name:ident, $scenario:ident $(, $arg:expr)?) => {
        mod $name {
            #[tokio::test]
            async fn on_tansu() {
                super::$scenario("tansu" $(, $arg)?).await;
            }
            #[tokio::test]
            async fn on_noida() {
                super::$scenario("noida" $(, $arg)?).await;
            }
        }
    };
}

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

/// A private broker, a frontend, two workers `w1` and `w2`, and a user's token.
struct Cluster {
    _broker: Private,
    _frontend: Proc,
    w1: Proc,
    w2: Proc,
    api: Api,
    token: String,
}

impl Cluster {
    async fn start(kind: &str) -> Self {
        let servers = Servers::load();
        let (broker, env) = setup(&servers, kind);
        let frontend = kumulus("frontend", &env, &[]);
        let (w1, w2) = (worker(&env, "w1"), worker(&env, "w2"));
        let api = Api::new(frontend.url());
        let [(u1, p1), _] = servers.users();
        let token = api.login_with(&u1, &p1).await;
        Self {
            _broker: broker,
            _frontend: frontend,
            w1,
            w2,
            api,
            token,
        }
    }
}

/// Two workers, four jobs; the worker running the first job is killed
/// and never replaced. Every job ends, the killed worker's ones on the
/// survivor, each with one final state.
async fn a_killed_worker_that_nobody_replaces(kind: &str) {
    let Cluster {
        _broker,
        _frontend,
        mut w1,
        mut w2,
        api,
        token,
    } = Cluster::start(kind).await;
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
    let fault = chrono::Utc::now();

    let jobs = wait_all(&api, &token, &ids, 180).await;
    for job in &jobs {
        assert_eq!(job["state"], "succeeded", "{job}");
        let finished: chrono::DateTime<chrono::Utc> =
            job["finished_at"].as_str().unwrap().parse().unwrap();
        if finished > killed_at {
            assert_eq!(job["worker"], survivor, "{job}");
        }
    }
    // The job the dead worker held was given up and run again, or (the
    // broker handing the survivor its message first) taken over.
    let first = &jobs[0];
    assert_eq!(first["worker"], survivor, "{first}");
    // (Moves of a job that never started, off a partition nobody consumed,
    // are attempts too.)
    let attempts = first["attempts"].as_array().unwrap();
    if first["attempt"].as_u64().unwrap() >= 2 {
        let victims: Vec<&Value> = attempts
            .iter()
            .filter(|a| a["worker"] == victim.as_str())
            .collect();
        assert_eq!(victims.len(), 1, "{first}");
        assert!(victims[0]["ended"].is_string(), "{first}");
    }
    let (_, out) = api.file(&token, &ids[0], "stdout.log").await;
    assert_eq!(String::from_utf8_lossy(&out), "done\n");
    let scenario = format!("worker SIGKILLed mid-job, never replaced ({kind})");
    report(&api, &token, &scenario, &ids, fault, Duration::from_secs(3)).await;
}

on_both_brokers!(
    a_killed_worker_that_nobody_replaces,
    a_killed_worker_that_nobody_replaces
);

/// A worker stopped (SIGTERM) in the middle of a job longer than its
/// shutdown grace: it stops the job and queues it again as a new attempt,
/// which the other worker runs to the end, once.
async fn a_worker_stopped_mid_job(kind: &str) {
    let servers = Servers::load();
    let (_broker, mut env) = setup(&servers, kind);
    env.push(("KUMULUS_WORKER__SHUTDOWN_GRACE_SECS".into(), "1".into()));
    let _frontend = kumulus("frontend", &env, &[]);
    let mut w1 = worker(&env, "w1");
    let mut w2 = worker(&env, "w2");
    let api = Api::new(_frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::node("setTimeout(() => console.log('done'), 4000);");
    let id = api.submit(&token, json!({"url": repo.path()})).await;
    let running = api.wait_for(&token, &id, &["running"], 90).await;
    let stopped = running["worker"].as_str().unwrap().to_string();
    let (gone, other) = if stopped == "w1" {
        (&mut w1, "w2")
    } else {
        (&mut w2, "w1")
    };
    let fault = chrono::Utc::now();
    gone.signal(Signal::SIGTERM);
    let status = gone.child.wait().unwrap();
    assert!(
        status.success(),
        "the worker's stop was not clean: {status}"
    );

    let job = api.wait_for(&token, &id, &TERMINAL, 120).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["worker"], other, "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["worker"], stopped.as_str(), "{job}");
    assert!(
        attempts[0]["ended"].as_str().unwrap().contains("shut down"),
        "{job}"
    );
    // A drain is not a failed try: it costs none of the job's attempts.
    assert_eq!(attempts[0]["handed_back"], true, "{job}");
    let (_, out) = api.file(&token, &id, "stdout.log").await;
    assert_eq!(String::from_utf8_lossy(&out), "done\n");
    let scenario = format!("worker SIGTERMed mid-job, 1 s grace ({kind})");
    report(
        &api,
        &token,
        &scenario,
        &[id],
        fault,
        Duration::from_secs(3),
    )
    .await;
}

on_both_brokers!(a_worker_stopped_mid_job, a_worker_stopped_mid_job);

/// A job the store holds as queued whose message is not in the queue: what
/// a frontend that died between storing a job and queueing it leaves, and
/// what a broker that drops acknowledged messages in a restart leaves
/// (noida-db after a SIGTERM, tansu after a graceful stop). The reaper
/// finds it on a partition where every job was taken and queues it again;
/// it runs once.
async fn a_job_the_queue_lost(kind: &str) {
    use kumulus_core::job::{JobId, JobRecord, QueuedJob};
    use kumulus_core::ports::JobStore;

    let servers = Servers::load();
    let (_broker, env) = setup(&servers, kind);
    let _frontend = kumulus("frontend", &env, &[]);
    let _w1 = worker(&env, "w1");
    let api = Api::new(_frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::node("console.log('ran');");
    // One job the normal way: the queue works, and its record gives the
    // owner and the payload's shape.
    let first = api.submit(&token, json!({"url": repo.path()})).await;
    let done = api.wait_for(&token, &first, &TERMINAL, 90).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let mut cfg = common::cluster::config(&servers, &namespace());
    cfg.mongo.database = env
        .iter()
        .find(|(k, _)| k == "KUMULUS_MONGO__DATABASE")
        .map(|(_, v)| v.clone())
        .unwrap();
    let store = kumulus_mongo::MongoStore::connect(&cfg.mongo)
        .await
        .unwrap();
    let first_id: JobId = first.parse().unwrap();
    let mut lost: QueuedJob = store.payload(first_id).await.unwrap().unwrap();
    lost.id = JobId::new();
    lost.attempt = 1;
    lost.submitted_at = chrono::Utc::now();
    lost.partition = Some(0);
    // Stored, never queued.
    store
        .insert(&JobRecord::queued(&lost), &lost)
        .await
        .unwrap();
    let fault = chrono::Utc::now();
    let id = lost.id.to_string();
    let job = api.wait_for(&token, &id, &TERMINAL, 120).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    let attempts = job["attempts"].as_array().unwrap();
    assert!(
        attempts[0]["ended"]
            .as_str()
            .unwrap()
            .contains("the queue lost it"),
        "{job}"
    );
    assert!(attempts[0]["started_at"].is_null(), "{job}");
    let (_, out) = api.file(&token, &id, "stdout.log").await;
    assert_eq!(String::from_utf8_lossy(&out), "ran\n");
    // The first job, long ended, was left alone.
    let (_, again) = api
        .json(
            reqwest::Method::GET,
            &format!("/api/jobs/{first}"),
            &token,
            None,
        )
        .await;
    assert_eq!(again["attempt"], 1, "{again}");
    let scenario = format!("a queued job missing from the queue ({kind})");
    report(
        &api,
        &token,
        &scenario,
        &[id],
        fault,
        Duration::from_secs(3),
    )
    .await;
}

on_both_brokers!(a_job_the_queue_lost, a_job_the_queue_lost);

/// A worker paused (SIGSTOP) past its lease while it runs a job, then
/// resumed: the job was given up and run elsewhere; the resumed worker
/// stops its superseded attempt; one final state, the live attempt's files.
async fn a_paused_worker_wakes_up_fenced(kind: &str) {
    let Cluster {
        _broker,
        _frontend,
        mut w1,
        mut w2,
        api,
        token,
    } = Cluster::start(kind).await;
    // Prints which attempt ran it: its worker's pid namespace hides the
    // worker, so the attempt number is what tells the runs apart.
    let repo =
        Repo::node("const t = Date.now(); setTimeout(() => console.log('ran at ' + t), 4000);");
    let id = api.submit(&token, json!({"url": repo.path()})).await;
    let running = api.wait_for(&token, &id, &["running"], 90).await;
    let paused_id = running["worker"].as_str().unwrap().to_string();
    let paused = if paused_id == "w1" { &mut w1 } else { &mut w2 };
    paused.signal(Signal::SIGSTOP);
    let fault = chrono::Utc::now();
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
    // Attempt 1, on the paused worker, was given up (or taken over); the
    // final state is the live attempt's (which may have gone to the woken
    // worker's partition, or to it after a rebalance).
    let attempts = job["attempts"].as_array().unwrap();
    let last = attempts.last().unwrap();
    assert_eq!(last["attempt"], job["attempt"], "{job}");
    assert_eq!(last["worker"], job["worker"], "{job}");
    if job["attempt"] == 1 {
        assert_ne!(job["worker"], paused_id.as_str(), "taken over: {job}");
    } else {
        assert!(attempts[0]["ended"].is_string(), "{job}");
    }
    let (_, out) = api.file(&token, &id, "stdout.log").await;
    let shown = String::from_utf8_lossy(&out).to_string();
    // Give the woken attempt time to finish what it would have.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = api.job(&token, &id).await;
    assert_eq!(after, job, "the record changed after its final state");
    let (_, again) = api.file(&token, &id, "stdout.log").await;
    assert_eq!(String::from_utf8_lossy(&again), shown, "files replaced");
    assert!(shown.starts_with("ran at "), "{shown}");
    let scenario = format!("worker SIGSTOPped past its lease, then SIGCONTed ({kind})");
    report(
        &api,
        &token,
        &scenario,
        &[id],
        fault,
        Duration::from_secs(1),
    )
    .await;
}

on_both_brokers!(
    a_paused_worker_wakes_up_fenced,
    a_paused_worker_wakes_up_fenced
);

/// Two frontends; one is killed in the middle of a burst of submits.
/// Every job it answered 201 for ends, seen through the other.
async fn a_frontend_killed_during_a_burst(kind: &str) {
    let servers = Servers::load();
    let (_broker, env) = setup(&servers, kind);
    let mut doomed = kumulus("frontend", &env, &[]);
    let other = kumulus("frontend", &env, &[]);
    let _w = kumulus("worker", &env, &[("KUMULUS_WORKER__SLOTS", "2")]);
    let [(u1, p1), _] = servers.users();
    let api = Api::new(doomed.url());
    let token = api.login_with(&u1, &p1).await;
    let repo = Repo::node("console.log('ok');");
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut killed = false;
    let mut fault = chrono::Utc::now();
    // Submits until the kill has come in the middle of them (a slow
    // machine answers the first ones late), and 20 more after it.
    let mut after_kill = 0;
    while after_kill < 20 && tasks.len() < 400 {
        if killed {
            after_kill += 1;
        }
        let (base, token, url) = (doomed.url(), token.clone(), repo.path());
        let counter = answered.clone();
        tasks.push(tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(format!("{base}/api/jobs"))
                .bearer_auth(&token)
                .json(&json!({"url": url}))
                .send()
                .await;
            match resp {
                Ok(r) if r.status() == 201 => {
                    let v: Value = r.json().await.ok()?;
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    v["id"].as_str().map(str::to_owned)
                }
                _ => None,
            }
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        // In the middle of the burst: some answered, more on their way.
        if !killed && answered.load(std::sync::atomic::Ordering::SeqCst) >= 10 {
            doomed.signal(Signal::SIGKILL);
            killed = true;
            fault = chrono::Utc::now();
        }
    }
    assert!(killed, "the burst ended before the kill");
    let mut accepted = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.unwrap() {
            accepted.push(id);
        }
    }
    assert!(
        !accepted.is_empty(),
        "no submit was accepted before the kill"
    );
    let api = Api::new(other.url());
    let token = api.login_with(&u1, &p1).await;
    for job in wait_all(&api, &token, &accepted, 180).await {
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let scenario =
        format!("frontend SIGKILLed during a burst of submits, jobs answered 201 ({kind})");
    report(
        &api,
        &token,
        &scenario,
        &accepted,
        fault,
        Duration::from_secs(2),
    )
    .await;
}

on_both_brokers!(
    a_frontend_killed_during_a_burst,
    a_frontend_killed_during_a_burst
);

/// A job that writes one output file named after its argument.
fn writer() -> Repo {
    Repo::node(
        "require('fs').writeFileSync('output/' + process.argv[2] + '.txt', process.argv[2]);\
         setTimeout(() => console.log('wrote ' + process.argv[2]), 1000);",
    )
}

/// S3 stopped while jobs store their files, then brought back; MongoDB
/// stopped while their events are projected, then brought back. No final
/// state and no file is lost.
async fn storage_down_and_back(kind: &str, which: &str) {
    let servers = Servers::load();
    let (_broker, mut env) = setup(&servers, kind);
    let mut store = Private::start(&servers, which, &[]);
    for (k, v) in env.iter_mut() {
        match (which, k.as_str()) {
            ("s3", "KUMULUS_S3__ENDPOINT") => *v = format!("http://{}", store.addr()),
            ("mongo", "KUMULUS_MONGO__URI") => {
                *v = format!("mongodb://{}/?directConnection=true", store.addr())
            }
            _ => {}
        }
    }
    let frontend = kumulus("frontend", &env, &[]);
    let _w = kumulus("worker", &env, &[("KUMULUS_WORKER__SLOTS", "2")]);
    let api = Api::new(frontend.url());
    let [(u1, p1), _] = servers.users();
    let token = api.login_with(&u1, &p1).await;
    let repo = writer();
    let mut ids = Vec::new();
    for n in 0..6 {
        let name = format!("f{n}");
        ids.push(
            api.submit(&token, json!({"url": repo.path(), "args": [name]}))
                .await,
        );
    }
    api.wait_for(&token, &ids[0], &["running"], 90).await;
    store.proc.stop();
    let fault = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    store.restart(&servers, Duration::from_millis(0));
    // Jobs may be 503 for a moment while the store comes back.
    let deadline = Instant::now() + Duration::from_secs(240);
    for (n, id) in ids.iter().enumerate() {
        let job = loop {
            let (status, job) = api
                .json(
                    reqwest::Method::GET,
                    &format!("/api/jobs/{id}"),
                    &token,
                    None,
                )
                .await;
            if status == 200 && TERMINAL.iter().any(|s| job["state"] == *s) {
                break job;
            }
            assert!(
                Instant::now() < deadline,
                "{which}: never ended: {status} {job}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(job["state"], "succeeded", "{which}: {job}");
        let (status, body) = api.file(&token, id, &format!("output/f{n}.txt")).await;
        assert_eq!(status, 200, "{which}: {job}");
        assert_eq!(String::from_utf8_lossy(&body), format!("f{n}"));
    }
    let what = if which == "s3" {
        "S3 down for 4 s during uploads"
    } else {
        "MongoDB down for 4 s during projection"
    };
    let scenario = format!("{what} ({kind})");
    report(&api, &token, &scenario, &ids, fault, Duration::from_secs(2)).await;
}

on_both_brokers!(s3_down_during_uploads, storage_down_and_back, "s3");

on_both_brokers!(
    mongodb_down_during_projection,
    storage_down_and_back,
    "mongo"
);
