//! Live logs (`GET /api/jobs/{id}/logs`) against `kumulus up`, through the
//! client crate: a running job's output as it is written, from the start
//! for a late follower too, ending with exactly the stored logs; an ended
//! job's stored logs at once; the same rules of access as every route.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{Kumulus, Options, Repo, USERS};
use kumulus_client::{Client, JobState, LogEvent, LogEvents, LogStream, NewJob, Session};
use std::time::Duration;

/// What a follower saw: each stream's bytes where they go (a byte missed
/// live stays `None`), gaps, and the end.
#[derive(Default, Debug)]
struct Seen {
    out: [Vec<Option<u8>>; 2],
    gaps: usize,
    /// The job's state at the first output, read right after it arrived.
    state_at_first: Option<JobState>,
    end: Option<kumulus_client::Job>,
}

impl Seen {
    fn text(&self, stream: LogStream) -> String {
        let bytes: Vec<u8> = self.out[stream as usize]
            .iter()
            .map(|b| b.unwrap_or(b'?'))
            .collect();
        String::from_utf8(bytes).unwrap()
    }
}

async fn follow(session: &Session, mut events: LogEvents, id: &str) -> Seen {
    let mut seen = Seen::default();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("an event within a minute")
        .unwrap()
    {
        match event {
            LogEvent::Output(c) => {
                if seen.state_at_first.is_none() {
                    seen.state_at_first = Some(session.job(id).await.unwrap().state);
                }
                let out = &mut seen.out[c.stream as usize];
                let end = c.offset as usize + c.text.len();
                // Never the same bytes twice, never going back.
                assert!(c.offset as usize >= out.len(), "{c:?} after {}", out.len());
                out.resize(c.offset as usize, None);
                out.extend(c.text.bytes().map(Some));
                assert_eq!(out.len(), end);
            }
            LogEvent::Gap { .. } => seen.gaps += 1,
            LogEvent::Attempt(n) => panic!("no other attempt expected, got {n}"),
            LogEvent::End(job) => {
                assert!(seen.end.is_none(), "one end");
                seen.end = Some(*job);
            }
        }
    }
    seen
}

/// Prints a line every 200 ms (and every other one to stderr too), 20 in all.
const TICKER: &str = r#"
let i = 0;
const t = setInterval(() => {
  i++;
  console.log(`line ${i}`);
  if (i % 2 === 0) console.error(`even ${i}`);
  if (i === 20) clearInterval(t);
}, 200);
"#;

fn ticker_text() -> (String, String) {
    let out: String = (1..=20).map(|i| format!("line {i}\n")).collect();
    let err: String = (1..=20)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("even {i}\n"))
        .collect();
    (out, err)
}

async fn session(k: &Kumulus, user: usize) -> Session {
    let (u, p) = USERS[user];
    Client::new(&k.api.base).unwrap().login(u, p).await.unwrap()
}

#[tokio::test]
async fn a_followed_job_streams_its_output_as_it_runs_and_ends_with_what_was_stored() {
    let k = Kumulus::start(Options {
        slots: 1,
        ..Options::default()
    })
    .await;
    let ana = session(&k, 0).await;
    let repo = Repo::node(TICKER);
    let id = ana.submit(&NewJob::repo(repo.path())).await.unwrap().id;
    // One follower from the submission on; another that joins once the
    // first has seen output, and still gets it from the start.
    let early = ana.logs(&id, true).await.unwrap();
    let (first, late) = tokio::join!(follow(&ana, early, &id), async {
        loop {
            let mut now = ana.logs(&id, false).await.unwrap();
            if let Ok(Some(LogEvent::Output(_))) = now.next().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        follow(&ana, ana.logs(&id, true).await.unwrap(), &id).await
    });
    let (out, err) = ticker_text();
    for seen in [&first, &late] {
        assert_eq!(
            seen.state_at_first,
            Some(JobState::Running),
            "output came live"
        );
        assert_eq!(seen.text(LogStream::Stdout), out);
        assert_eq!(seen.text(LogStream::Stderr), err);
        assert_eq!(seen.gaps, 0);
        let end = seen.end.as_ref().expect("an end event");
        assert_eq!(end.state, JobState::Succeeded);
    }
    // Exactly the stored logs.
    assert_eq!(ana.file(&id, "stdout.log").await.unwrap(), out.as_bytes());
}

#[tokio::test]
async fn an_ended_jobs_logs_come_stored_and_only_to_its_owner() {
    let k = Kumulus::start(Options {
        slots: 1,
        ..Options::default()
    })
    .await;
    let ana = session(&k, 0).await;
    let repo = Repo::node(TICKER);
    let id = ana.submit(&NewJob::repo(repo.path())).await.unwrap().id;
    let job = ana
        .wait(&id, Duration::from_millis(200), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    for follow_it in [false, true] {
        let seen = follow(&ana, ana.logs(&id, follow_it).await.unwrap(), &id).await;
        let (out, err) = ticker_text();
        assert_eq!(seen.text(LogStream::Stdout), out);
        assert_eq!(seen.text(LogStream::Stderr), err);
        assert_eq!(seen.end.unwrap().state, JobState::Succeeded);
    }
    // Another user's job is no job; a bad parameter is named.
    let bob = session(&k, 1).await;
    let e = bob.logs(&id, true).await.err().unwrap();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(404), "{e}");
    let (status, body) = k
        .api
        .json(
            reqwest::Method::GET,
            &format!("/api/jobs/{id}/logs?follow=maybe"),
            &ana.token(),
            None,
        )
        .await;
    assert_eq!(status.as_u16(), 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
}

#[tokio::test]
async fn output_faster_than_the_live_rate_still_ends_complete() {
    // 2 KiB a second live: the job writes 400 KB in about a second.
    let k = Kumulus::start(Options {
        slots: 1,
        env: vec![("KUMULUS_WORKER__LIVE_LOGS_RATE_BYTES".into(), "2048".into())],
        ..Options::default()
    })
    .await;
    let ana = session(&k, 0).await;
    let repo = Repo::node(
        r#"
let n = 0;
const t = setInterval(() => {
  for (let j = 0; j < 40; j++) { n++; console.log(String(n).padStart(99, '.')); }
  if (n >= 4000) clearInterval(t);
}, 10);
"#,
    );
    let id = ana.submit(&NewJob::repo(repo.path())).await.unwrap().id;
    let seen = follow(&ana, ana.logs(&id, true).await.unwrap(), &id).await;
    assert_eq!(seen.end.as_ref().unwrap().state, JobState::Succeeded);
    let stored = ana.file(&id, "stdout.log").await.unwrap();
    assert_eq!(stored.len(), 400_000);
    let got = &seen.out[LogStream::Stdout as usize];
    assert_eq!(got.len(), stored.len(), "the follower reached the end");
    // Every byte it got is the stored byte at that place; what it missed
    // live was announced as a gap.
    for (i, b) in got.iter().enumerate() {
        if let Some(b) = b {
            assert_eq!(*b, stored[i], "byte {i}");
        }
    }
    let missed = got.iter().filter(|b| b.is_none()).count();
    assert!(
        missed == 0 || seen.gaps > 0,
        "{missed} bytes missed without a gap"
    );
}
