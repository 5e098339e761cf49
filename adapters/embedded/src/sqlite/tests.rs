//! The SQLite adapter on its own (the shared port suites are in tests/conformance.rs).

use super::*;
use kumulus_core::event::{EventKind, StatusEvent};
use kumulus_core::job::{JobId, JobState};
use kumulus_core::ports::{Intake, JobQueue, JobSource, JobStore, ListQuery};
use std::time::Duration;

fn job(owner: &str) -> QueuedJob {
    QueuedJob {
        id: JobId::new(),
        owner: owner.into(),
        url: "/srv/r".into(),
        args: vec![],
        config: None,
        timeout_secs: 10,
        limits: Default::default(),
        submitted_at: chrono::Utc::now(),
        attempt: 1,
        not_before: None,
        partition: None,
    }
}

#[tokio::test]
async fn claims_are_exclusive_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let db = Sqlite::open(&path).unwrap();
    let jobs: Vec<QueuedJob> = (0..20).map(|_| job("ana")).collect();
    for j in &jobs {
        db.insert(&JobRecord::queued(j), j).await.unwrap();
        db.enqueue(j).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..5 {
                got.push(db.next().await.unwrap());
            }
            got
        }));
    }
    let mut ids = Vec::new();
    let mut deliveries = Vec::new();
    for t in tasks {
        for d in t.await.unwrap() {
            ids.push(d.job.id);
            deliveries.push(d);
        }
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every job claimed exactly once");
    assert_eq!(db.waiting().await.unwrap(), 0);
    // Ack half; the other claims belong to a process that "died".
    for d in &deliveries[..10] {
        db.ack(d).await.unwrap();
    }
    drop(db);
    let db = Sqlite::open(&path).unwrap();
    assert_eq!(
        db.waiting().await.unwrap(),
        0,
        "claims stand until recovered"
    );
    assert_eq!(db.recover_interrupted(3).await.unwrap(), 10);
    assert_eq!(db.waiting().await.unwrap(), 10);
    // Each comes back as its second attempt.
    let again = db.next().await.unwrap();
    assert_eq!(again.job.attempt, 2);
    assert_eq!(db.get(again.job.id).await.unwrap().unwrap().attempt, 2);
}

#[tokio::test]
async fn listing_is_per_owner_newest_first_with_cursor() {
    let db = Sqlite::temporary().unwrap();
    let mut mine = Vec::new();
    for i in 0..5 {
        let j = job(if i % 2 == 0 { "ana" } else { "bob" });
        db.insert(&JobRecord::queued(&j), &j).await.unwrap();
        if i % 2 == 0 {
            mine.push(j.id);
        }
    }
    mine.reverse();
    let page = db
        .list(
            "ana",
            &ListQuery {
                state: None,
                before: None,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), mine[..2]);
    let rest = db
        .list(
            "ana",
            &ListQuery {
                state: None,
                before: Some(mine[1]),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), mine[2..]);
    let running = db
        .list(
            "ana",
            &ListQuery {
                state: Some(JobState::Running),
                before: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert!(running.is_empty());
}

#[tokio::test]
async fn apply_projects_forward_only() {
    let db = Sqlite::temporary().unwrap();
    let j = job("ana");
    db.insert(&JobRecord::queued(&j), &j).await.unwrap();
    let started = StatusEvent::new(j.id, "ana", EventKind::Started);
    let rec = db.apply(&started).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Running);
    let unknown = StatusEvent::new(JobId::new(), "ana", EventKind::Started);
    assert!(db.apply(&unknown).await.unwrap().is_none());
}

#[tokio::test]
async fn queued_records_without_a_queue_entry_are_failed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let j = job("ana");
    {
        let db = Sqlite::open(&path).unwrap();
        db.insert(&JobRecord::queued(&j), &j).await.unwrap();
    }
    let db = Sqlite::open(&path).unwrap();
    let rec = db.get(j.id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Failed);
    assert!(rec.error.unwrap().contains("lost"));
}

#[tokio::test]
async fn concurrent_accepts_each_leave_a_record_and_a_queue_entry() {
    let db = Sqlite::temporary().unwrap();
    let jobs: Vec<QueuedJob> = (0..300).map(|_| job("ana")).collect();
    let accepts = jobs.iter().map(|j| {
        let db = db.clone();
        let j = j.clone();
        tokio::spawn(async move { db.accept(&JobRecord::queued(&j), &j).await })
    });
    for a in futures::future::join_all(accepts).await {
        a.unwrap().unwrap();
    }
    assert_eq!(db.waiting().await.unwrap(), 300);
    let mut claimed = Vec::new();
    for _ in 0..300 {
        claimed.push(db.next().await.unwrap().job.id);
    }
    claimed.sort();
    let mut ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    ids.sort();
    assert_eq!(claimed, ids, "each accepted job claimed once");
    for id in ids {
        assert_eq!(db.get(id).await.unwrap().unwrap().state, JobState::Queued);
    }
}

#[tokio::test]
async fn a_failing_write_leaves_the_others_of_its_batch() {
    let db = Sqlite::temporary().unwrap();
    let first = job("ana");
    db.accept(&JobRecord::queued(&first), &first).await.unwrap();
    // The same id again (refused by the primary key) among new ones, all
    // sent at once so that they share batches.
    let mut batch: Vec<QueuedJob> = (0..50).map(|_| job("ana")).collect();
    batch.insert(25, first.clone());
    let results = futures::future::join_all(batch.iter().map(|j| {
        let db = db.clone();
        let j = j.clone();
        async move { db.accept(&JobRecord::queued(&j), &j).await }
    }))
    .await;
    assert!(
        results[25].is_err(),
        "a second record with one id is refused"
    );
    for (i, r) in results.iter().enumerate() {
        if i != 25 {
            assert!(r.is_ok(), "write {i} failed: {r:?}");
            assert!(db.get(batch[i].id).await.unwrap().is_some());
        }
    }
    // Neither half of the refused accept stayed: one queue entry for the id.
    assert_eq!(db.waiting().await.unwrap(), 51);
}

#[tokio::test]
async fn a_claim_whose_caller_stopped_waiting_goes_back_to_the_queue() {
    let db = Sqlite::temporary().unwrap();
    let j = job("ana");
    db.accept(&JobRecord::queued(&j), &j).await.unwrap();
    for _ in 0..20 {
        // Polled once (the claim is sent), then dropped at once, before or
        // after the writer answers.
        let gave_up = tokio::time::timeout(Duration::ZERO, db.next()).await;
        if let Ok(delivery) = gave_up {
            // It won the race: it has the job; hand it back for the next round.
            db.release(&delivery.unwrap()).await.unwrap();
        }
        // The undo is a write of its own, committed in the writer's next
        // batch at the latest.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db.waiting().await.unwrap() != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the job never came back in line"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(db.next().await.unwrap().job.id, j.id);
}

/// What SQLite plans for `sql`, one line per step.
async fn plan(db: &Sqlite, sql: &'static str) -> String {
    db.read(move |c| {
        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let unbound = vec![rusqlite::types::Null; st.parameter_count()];
        let rows = st.query_map(rusqlite::params_from_iter(unbound), |r| {
            r.get::<_, String>(3)
        })?;
        rows.collect::<Result<Vec<_>, _>>()
    })
    .await
    .unwrap()
    .join("\n")
}

#[tokio::test]
async fn listings_sweeps_and_claims_walk_an_index_and_never_scan_a_table() {
    let db = Sqlite::temporary().unwrap();
    for (sql, index) in [
        (store::LIST, "jobs_by_owner"),
        (store::LIST_IN_STATE, "jobs_by_owner_state"),
        (store::ENDED_BEFORE, "jobs_ended"),
        (store::WEBHOOKS_DUE, "jobs_webhook_pending"),
        (store::STALLED, "jobs_alive"),
        (queue::CLAIM, "queue_ready"),
    ] {
        let plan = plan(&db, sql).await;
        let steps: Vec<&str> = plan.lines().collect();
        assert!(
            steps
                .iter()
                .any(|s| s.split_whitespace().any(|w| w == index)),
            "{sql}\nshould use {index}:\n{plan}"
        );
        // A partial index may be walked whole (it holds only the rows
        // wanted); a table never.
        assert!(
            !steps
                .iter()
                .any(|s| s.starts_with("SCAN") && !s.contains("INDEX")),
            "{sql}\nscans a table:\n{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{sql}\nsorts:\n{plan}");
    }
}

#[tokio::test]
async fn ended_jobs_are_swept_by_when_they_ended() {
    let db = Sqlite::temporary().unwrap();
    let (old, new, active) = (job("ana"), job("ana"), job("ana"));
    for j in [&old, &new, &active] {
        db.accept(&JobRecord::queued(j), j).await.unwrap();
    }
    let ended = |j: &QueuedJob, at: chrono::DateTime<chrono::Utc>| {
        let mut ev = StatusEvent::new(
            j.id,
            "ana",
            EventKind::Finished(kumulus_core::event::Outcome {
                state: JobState::Succeeded,
                started_at: None,
                elapsed_secs: None,
                exit_code: Some(0),
                error: None,
                files: Vec::new(),
                infrastructure: false,
            }),
        );
        ev.at = at;
        ev
    };
    let now = chrono::Utc::now();
    db.apply(&ended(&old, now - chrono::Duration::days(10)))
        .await
        .unwrap();
    db.apply(&ended(&new, now)).await.unwrap();
    let swept = db
        .ended_before(now - chrono::Duration::days(1), 10)
        .await
        .unwrap();
    assert_eq!(swept.iter().map(|r| r.id).collect::<Vec<_>>(), [old.id]);
}
