//! One conformance suite per port, run against the embedded adapter and the
//! real server's adapter alike (the servers from `scripts/test.sh`).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::cluster::{config, namespace, Servers};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kumulus_core::event::{EventKind, Outcome, StatusEvent};
use kumulus_core::job::{JobId, JobRecord, JobState, QueuedJob};
use kumulus_core::ports::{
    AuthError, Authenticator, BlobStore, CancelBus, CancelRequest, JobQueue, JobSource, JobStore,
    KeyClaim, ListQuery, StatusBus,
};

fn job(owner: &str) -> QueuedJob {
    QueuedJob {
        id: JobId::new(),
        owner: owner.into(),
        url: "https://user:secret@example.com/repo.git".into(),
        args: vec!["a".into(), "b c".into()],
        config: Some("{\"k\":1}".into()),
        timeout_secs: 30,
        limits: Default::default(),
        submitted_at: chrono::Utc::now(),
        attempt: 1,
        not_before: None,
        partition: None,
    }
}

fn finished(id: JobId, state: JobState) -> StatusEvent {
    StatusEvent::new(
        id,
        "ana",
        EventKind::Finished(Outcome {
            state,
            started_at: None,
            elapsed_secs: Some(2.5),
            exit_code: Some(0),
            error: None,
            files: vec!["stdout.log".into(), "output/a.txt".into()],
            infrastructure: false,
        }),
    )
    .from_worker("w1")
}

async fn job_store_suite(store: &dyn JobStore) {
    store.ping().await.expect("ping");
    let mut ana = Vec::new();
    let mut ana_jobs = Vec::new();
    for _ in 0..4 {
        let j = job("ana");
        let rec = JobRecord::queued(&j);
        store.insert(&rec, &j).await.expect("insert");
        ana.push(rec);
        ana_jobs.push(j);
    }
    let bob_job = job("bob");
    let bob = JobRecord::queued(&bob_job);
    store.insert(&bob, &bob_job).await.expect("insert");
    // Inserts at once (an adapter may batch them): a second record with an
    // id already stored is refused, and it alone.
    let many: Vec<QueuedJob> = (0..20).map(|_| job("carl")).collect();
    let results = futures::future::join_all(
        many.iter()
            .chain(std::iter::once(&bob_job))
            .map(|j| async move { store.insert(&JobRecord::queued(j), j).await }),
    )
    .await;
    let (dup, fresh) = results.split_last().expect("results");
    assert!(dup.is_err(), "a second record for one id is refused");
    assert!(fresh.iter().all(|r| r.is_ok()), "{fresh:?}");
    for j in &many {
        assert!(store.get(j.id).await.expect("get").is_some());
    }
    assert_eq!(store.get(bob.id).await.expect("get"), Some(bob.clone()));
    // The job as queued, credentials and config included, for new attempts;
    // the record never carries it.
    let payload = store.payload(ana[0].id).await.expect("payload");
    assert_eq!(payload.as_ref(), Some(&ana_jobs[0]));
    assert!(store
        .payload(JobId::new())
        .await
        .expect("payload")
        .is_none());

    let got = store.get(ana[0].id).await.expect("get").expect("found");
    assert_eq!(got, ana[0]);
    assert!(!got.url.contains("secret"));
    assert!(store.get(JobId::new()).await.expect("get").is_none());

    let newest_first: Vec<JobId> = ana.iter().rev().map(|r| r.id).collect();
    let page = store
        .list(
            "ana",
            &ListQuery {
                state: None,
                before: None,
                limit: 3,
            },
        )
        .await
        .expect("list");
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        newest_first[..3]
    );
    let rest = store
        .list(
            "ana",
            &ListQuery {
                state: None,
                before: Some(newest_first[2]),
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(
        rest.iter().map(|r| r.id).collect::<Vec<_>>(),
        newest_first[3..]
    );

    // Projection: forward only, idempotent, unknown jobs ignored.
    let started = StatusEvent::new(ana[1].id, "ana", EventKind::Started).from_worker("w1");
    let rec = store.apply(&started).await.expect("apply").expect("found");
    assert_eq!(rec.state, JobState::Running);
    assert_eq!(rec.worker.as_deref(), Some("w1"));
    let done = finished(ana[1].id, JobState::Succeeded);
    let rec = store.apply(&done).await.expect("apply").expect("found");
    assert_eq!(rec.state, JobState::Succeeded);
    assert_eq!(
        rec.files,
        vec!["stdout.log".to_string(), "output/a.txt".to_string()]
    );
    for late in [
        started.clone(),
        finished(ana[1].id, JobState::Failed),
        done.clone(),
    ] {
        let rec = store.apply(&late).await.expect("apply").expect("found");
        assert_eq!(rec.state, JobState::Succeeded);
    }
    assert_eq!(
        store
            .get(ana[1].id)
            .await
            .expect("get")
            .expect("found")
            .state,
        JobState::Succeeded
    );
    let unknown = StatusEvent::new(JobId::new(), "ana", EventKind::Started);
    assert!(store.apply(&unknown).await.expect("apply").is_none());

    // Leases: a running attempt silent past the cutoff is stalled; a
    // heartbeat renews it; once given up, its events change nothing.
    let id = ana[2].id;
    let old = chrono::Utc::now() - chrono::Duration::seconds(120);
    let mut s1 = StatusEvent::new(id, "ana", EventKind::Started).from_worker("w1");
    s1.at = old;
    store.apply(&s1).await.expect("apply");
    let cutoff = chrono::Utc::now() - chrono::Duration::seconds(60);
    let stalled = store.stalled(cutoff, 100).await.expect("stalled");
    assert!(stalled.iter().any(|r| r.id == id), "{stalled:?}");
    let beat = StatusEvent::new(id, "ana", EventKind::Heartbeat).from_worker("w1");
    let rec = store.apply(&beat).await.expect("apply").expect("found");
    assert_eq!(rec.attempts[0].last_heartbeat, Some(beat.at));
    let stalled = store.stalled(cutoff, 100).await.expect("stalled");
    assert!(stalled.iter().all(|r| r.id != id), "renewed: {stalled:?}");
    let requeued = StatusEvent::new(
        id,
        "ana",
        EventKind::Requeued {
            reason: "w1 went quiet".into(),
            handed_back: false,
        },
    );
    let rec = store.apply(&requeued).await.expect("apply").expect("found");
    assert_eq!((rec.state, rec.attempt), (JobState::Queued, 2));
    let stale = finished(id, JobState::Succeeded);
    let rec = store.apply(&stale).await.expect("apply").expect("found");
    assert_eq!((rec.state, rec.attempt), (JobState::Queued, 2), "fenced");
    let s2 = StatusEvent::new(id, "ana", EventKind::Started)
        .from_worker("w2")
        .for_attempt(2);
    store.apply(&s2).await.expect("apply");
    // Attempt 2 is w2's: w1 has no say in it.
    let from_w1 = finished(id, JobState::Succeeded).for_attempt(2);
    let rec = store.apply(&from_w1).await.expect("apply").expect("found");
    assert_eq!(rec.state, JobState::Running);
    let mut done = finished(id, JobState::Failed).for_attempt(2);
    done.worker = Some("w2".into());
    let rec = store.apply(&done).await.expect("apply").expect("found");
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.attempts.len(), 2);
    assert_eq!(store.get(id).await.expect("get").expect("found"), rec);

    // Concurrent projections of the same events agree.
    let racers: Vec<_> = (0..4)
        .map(|i| {
            let ev = if i % 2 == 0 {
                StatusEvent::new(ana[2].id, "ana", EventKind::Started)
            } else {
                finished(ana[2].id, JobState::Failed)
            };
            async move { store.apply(&ev).await.expect("apply") }
        })
        .collect();
    futures::future::join_all(racers).await;
    assert_eq!(
        store
            .get(ana[2].id)
            .await
            .expect("get")
            .expect("found")
            .state,
        JobState::Failed
    );

    let succeeded = store
        .list(
            "ana",
            &ListQuery {
                state: Some(JobState::Succeeded),
                before: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(
        succeeded.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ana[1].id]
    );
    let bobs = store
        .list(
            "bob",
            &ListQuery {
                state: None,
                before: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(bobs.len(), 1);

    // Retention: ended jobs before the cutoff, never active ones.
    let ids = |recs: Vec<JobRecord>| recs.into_iter().map(|r| r.id).collect::<BTreeSet<_>>();
    let soon = chrono::Utc::now() + chrono::Duration::seconds(5);
    let ended = ids(store.ended_before(soon, 1000).await.expect("ended_before"));
    assert!(ended.contains(&ana[1].id), "the succeeded job");
    assert!(ended.contains(&ana[2].id), "the failed job");
    for active in [ana[0].id, ana[3].id, bob.id] {
        assert!(!ended.contains(&active), "an active job");
    }
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let old = ids(store
        .ended_before(an_hour_ago, 1000)
        .await
        .expect("ended_before"));
    assert!(!old.contains(&ana[1].id), "it ended just now");

    // Webhooks: due once the job has ended, until delivered; a retry when
    // its time comes.
    let hooked_job = job("ana");
    let hooked = JobRecord {
        webhook: Some(kumulus_core::webhook::Delivery::new(
            "https://hooks.example.com/x",
        )),
        ..JobRecord::queued(&hooked_job)
    };
    store.insert(&hooked, &hooked_job).await.expect("insert");
    let due = |at: chrono::DateTime<chrono::Utc>| async move {
        ids(store.webhooks_due(at, 1000).await.expect("webhooks_due"))
    };
    let soon = chrono::Utc::now() + chrono::Duration::seconds(5);
    assert!(!due(soon).await.contains(&hooked.id), "not before it ends");
    store
        .apply(&finished(hooked.id, JobState::Succeeded))
        .await
        .expect("apply");
    assert!(due(soon).await.contains(&hooked.id), "due once ended");
    let mut retry = hooked.webhook.clone().unwrap();
    retry.attempts = 1;
    retry.next_at = Some(chrono::Utc::now() + chrono::Duration::seconds(60));
    store
        .set_webhook(hooked.id, &retry)
        .await
        .expect("set_webhook");
    assert!(
        !due(soon).await.contains(&hooked.id),
        "not before its retry"
    );
    let a_minute_on = chrono::Utc::now() + chrono::Duration::seconds(90);
    assert!(due(a_minute_on).await.contains(&hooked.id), "at its retry");
    let rec = store.get(hooked.id).await.expect("get").expect("found");
    assert_eq!(rec.webhook.as_ref(), Some(&retry));
    assert_eq!(rec.state, JobState::Succeeded);
    retry.state = kumulus_core::webhook::DeliveryState::Delivered;
    store
        .set_webhook(hooked.id, &retry)
        .await
        .expect("set_webhook");
    assert!(!due(a_minute_on).await.contains(&hooked.id), "delivered");

    // Idempotency keys: claimed once, per owner, released only by their
    // job, forgotten once expired; racing claims get one winner.
    let key = format!("key-{}", JobId::new());
    let never = chrono::Utc::now() - chrono::Duration::hours(1);
    let (j1, j2) = (JobId::new(), JobId::new());
    let claim = |owner: &'static str, job: JobId, before| {
        let key = key.clone();
        async move {
            store
                .claim_key(owner, &key, "fp1", job, before)
                .await
                .expect("claim")
        }
    };
    assert_eq!(claim("ana", j1, never).await, KeyClaim::Claimed);
    let held = KeyClaim::Held {
        job: j1,
        fingerprint: "fp1".into(),
    };
    assert_eq!(claim("ana", j2, never).await, held);
    assert_eq!(
        claim("bob", j2, never).await,
        KeyClaim::Claimed,
        "bob's own key"
    );
    store.release_key("ana", &key, j2).await.expect("release");
    assert_eq!(
        claim("ana", j2, never).await,
        held,
        "only its job releases it"
    );
    store.release_key("ana", &key, j1).await.expect("release");
    assert_eq!(claim("ana", j2, never).await, KeyClaim::Claimed);
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(claim("ana", j1, later).await, KeyClaim::Claimed, "expired");
    let race = format!("race-{}", JobId::new());
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let race = race.clone();
            async move {
                store
                    .claim_key("ana", &race, "fp", JobId::new(), never)
                    .await
                    .expect("claim")
            }
        })
        .collect();
    let answers = futures::future::join_all(racers).await;
    assert_eq!(
        answers.iter().filter(|a| **a == KeyClaim::Claimed).count(),
        1,
        "{answers:?}"
    );

    store.remove(ana[3].id).await.expect("remove");
    assert!(store.get(ana[3].id).await.expect("get").is_none());
    assert!(store.payload(ana[3].id).await.expect("payload").is_none());
    store
        .remove(ana[3].id)
        .await
        .expect("removing twice is no error");
}

async fn queue_suite(queue: &dyn JobQueue, source: &dyn JobSource) {
    let jobs: Vec<QueuedJob> = (0..5).map(|_| job("ana")).collect();
    for j in &jobs {
        queue.enqueue(j).await.expect("enqueue");
    }
    let mut got = Vec::new();
    for _ in 0..jobs.len() {
        let d = tokio::time::timeout(Duration::from_secs(60), source.next())
            .await
            .expect("a job within 60 s")
            .expect("next");
        got.push(d);
    }
    let want: BTreeSet<JobId> = jobs.iter().map(|j| j.id).collect();
    let seen: BTreeSet<JobId> = got.iter().map(|d| d.job.id).collect();
    assert_eq!(seen, want, "every job delivered once");
    for d in &got {
        let original = jobs.iter().find(|j| j.id == d.job.id).expect("known job");
        assert_eq!(
            &d.job, original,
            "the job arrives whole, credentials and all"
        );
        source.ack(d).await.expect("ack");
    }
}

async fn blob_suite(blobs: &dyn BlobStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("small");
    let big = dir.path().join("big");
    std::fs::write(&small, b"hello\n").expect("write");
    let big_bytes: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &big_bytes).expect("write");
    let job = JobId::new();
    blobs
        .put_file(job, "stdout.log", &small)
        .await
        .expect("put");
    blobs
        .put_file(job, "output/sub/big.bin", &big)
        .await
        .expect("put");
    for (name, want) in [
        ("stdout.log", b"hello\n".to_vec()),
        ("output/sub/big.bin", big_bytes),
    ] {
        let blob = blobs.get(job, name).await.expect("get").expect("found");
        assert_eq!(blob.len, want.len() as u64);
        let chunks: Vec<_> = blob.body.collect().await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.expect("chunk").to_vec())
            .collect();
        assert_eq!(bytes, want, "{name}");
    }
    assert!(blobs.get(job, "missing.txt").await.expect("get").is_none());
    assert!(blobs
        .get(JobId::new(), "stdout.log")
        .await
        .expect("get")
        .is_none());
    assert!(blobs.get(job, "../stdout.log").await.is_err());

    // Removing a job takes every file of it, and nothing of another job's.
    let other = JobId::new();
    blobs
        .put_file(other, "stdout.log", &small)
        .await
        .expect("put");
    assert_eq!(blobs.remove_job(job).await.expect("remove"), 2);
    for name in ["stdout.log", "output/sub/big.bin"] {
        assert!(blobs.get(job, name).await.expect("get").is_none(), "{name}");
    }
    assert!(blobs.get(other, "stdout.log").await.expect("get").is_some());
    assert_eq!(blobs.remove_job(job).await.expect("again"), 0);
    assert_eq!(blobs.remove_job(JobId::new()).await.expect("none"), 0);
}

async fn auth_suite(auth: &dyn Authenticator, user: &str, password: &str) {
    let token = auth.login(user, password).await.expect("login");
    assert!(token.expires_in > 0);
    let who = auth.verify(&token.access_token).await.expect("verify");
    assert_eq!(who.username, user);
    assert!(matches!(
        auth.login(user, "wrong password").await,
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        auth.login("nobody-at-all", password).await,
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        auth.verify("garbage").await,
        Err(AuthError::InvalidToken(_))
    ));
    // A token with its signature cut off.
    let unsigned = token
        .access_token
        .rsplit_once('.')
        .map(|(h, _)| format!("{h}."))
        .expect("jwt");
    assert!(matches!(
        auth.verify(&unsigned).await,
        Err(AuthError::InvalidToken(_))
    ));
}

/// Publishes probes until the subscription sees one (a subscription "from
/// now on" may take a moment to start), then the real events.
async fn status_bus_suite(bus: &dyn StatusBus) {
    let mut events = bus.subscribe();
    let probe = StatusEvent::new(JobId::new(), "probe", EventKind::Started);
    let ready = async {
        loop {
            match events.next().await {
                Some(ev) if ev.owner == "probe" => return,
                Some(_) => continue,
                None => panic!("the subscription ended"),
            }
        }
    };
    tokio::pin!(ready);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        bus.publish(&probe).await.expect("publish");
        tokio::select! {
            _ = &mut ready => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription never saw an event"
        );
    }
    let sent: Vec<StatusEvent> = (0..3)
        .map(|_| StatusEvent::new(JobId::new(), "ana", EventKind::Started).from_worker("w"))
        .collect();
    for ev in &sent {
        bus.publish(ev).await.expect("publish");
    }
    let mut seen = Vec::new();
    while seen.len() < sent.len() {
        let ev = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("events arrive")
            .expect("stream open");
        if ev.owner == "ana" {
            seen.push(ev);
        }
    }
    assert_eq!(seen, sent);
}

async fn cancel_bus_suite(bus: &dyn CancelBus) {
    let mut cancels = bus.subscribe();
    let req = CancelRequest {
        job_id: JobId::new(),
        owner: "ana".into(),
        superseded: None,
    };
    bus.cancel(&req).await.expect("cancel");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = tokio::time::timeout_at(deadline, cancels.next())
            .await
            .expect("the cancellation arrives")
            .expect("stream open");
        if got == req {
            break;
        }
    }
}

mod embedded {
    use super::*;
    use kumulus_embedded::blobs::LocalBlobs;
    use kumulus_embedded::bus::{LocalCancelBus, LocalStatusBus};
    use kumulus_embedded::sqlite::Sqlite;
    use kumulus_embedded::users::BuiltinUsers;

    #[tokio::test]
    async fn sqlite_job_store() {
        job_store_suite(&Sqlite::temporary().unwrap()).await;
    }

    #[tokio::test]
    async fn sqlite_queue() {
        let db = Sqlite::temporary().unwrap();
        queue_suite(&db, &db).await;
    }

    #[tokio::test]
    async fn local_blobs() {
        let dir = tempfile::tempdir().unwrap();
        blob_suite(&LocalBlobs::new(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn builtin_users() {
        let users = [kumulus_core::config::UserEntry {
            username: "ana".into(),
            password: "pw".into(),
        }];
        auth_suite(
            &BuiltinUsers::new(&users, &[3; 32], 60).unwrap(),
            "ana",
            "pw",
        )
        .await;
    }

    #[tokio::test]
    async fn local_status_bus() {
        let store: Arc<dyn JobStore> = Arc::new(Sqlite::temporary().unwrap());
        status_bus_suite(&LocalStatusBus::new(store)).await;
    }

    #[tokio::test]
    async fn local_cancel_bus() {
        cancel_bus_suite(&LocalCancelBus::new(Sqlite::temporary().unwrap())).await;
    }
}

mod real {
    use super::*;
    use kumulus_kafka::producer::KafkaProducer;
    use kumulus_kafka::source::KafkaJobSource;

    async fn kafka(ns: &str) -> kumulus_core::config::Config {
        let cfg = config(&Servers::load(), ns);
        kumulus_kafka::admin::ensure_topics(&cfg.kafka)
            .await
            .expect("topics");
        cfg
    }

    #[tokio::test]
    async fn mongodb_job_store() {
        let cfg = config(&Servers::load(), &namespace());
        let store = kumulus_mongo::MongoStore::connect(&cfg.mongo)
            .await
            .unwrap();
        store.ensure_indexes().await.unwrap();
        job_store_suite(&store).await;
    }

    #[tokio::test]
    async fn kafka_queue() {
        let cfg = kafka(&namespace()).await;
        let producer = KafkaProducer::new(&cfg.kafka).unwrap();
        let source = KafkaJobSource::new(&cfg.kafka).unwrap();
        queue_suite(&producer, &source).await;
        source.close().await;
    }

    #[tokio::test]
    async fn s3_blobs() {
        let cfg = config(&Servers::load(), &namespace());
        let blobs = kumulus_s3::S3Blobs::new(&cfg.s3);
        blobs.ensure_bucket().await.unwrap();
        blob_suite(&blobs).await;
    }

    #[tokio::test]
    async fn s3_presigned_downloads() {
        let mut cfg = config(&Servers::load(), &namespace());
        cfg.s3.presign_secs = 60;
        let blobs = kumulus_s3::S3Blobs::new(&cfg.s3);
        blobs.ensure_bucket().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"presigned bytes").unwrap();
        let job = JobId::new();
        blobs.put_file(job, "output/f.txt", &file).await.unwrap();
        let url = blobs
            .presign(job, "output/f.txt")
            .await
            .unwrap()
            .expect("a URL");
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), b"presigned bytes");
        // A tampered signature is refused by the server.
        let bad = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
        assert_ne!(
            reqwest::get(&bad).await.unwrap().status(),
            reqwest::StatusCode::OK
        );
    }

    #[tokio::test]
    async fn openid_connect() {
        let servers = Servers::load();
        let cfg = config(&servers, &namespace());
        let [(user, password), _] = servers.users();
        auth_suite(
            &kumulus_oidc::OidcAuth::new(&cfg.oidc).unwrap(),
            &user,
            &password,
        )
        .await;
    }

    #[tokio::test]
    async fn kafka_status_bus() {
        let cfg = kafka(&namespace()).await;
        status_bus_suite(&KafkaProducer::new(&cfg.kafka).unwrap()).await;
    }

    #[tokio::test]
    async fn kafka_cancel_bus() {
        let cfg = kafka(&namespace()).await;
        cancel_bus_suite(&KafkaProducer::new(&cfg.kafka).unwrap()).await;
    }
}
