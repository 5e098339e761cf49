//! Job leases. A worker renews its lease on each job it runs with a
//! heartbeat every `worker.heartbeat_secs`; a running attempt whose lease ran
//! out (`worker.lease_missed_heartbeats` heartbeats missed) is stalled, and
//! the reaper gives it up: it queues the next attempt, or, after
//! `worker.max_attempts`, fails the job as an infrastructure failure. This is
//! the pure decision; the loop that acts on it is the frontend's reaper.

use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::event::{EventKind, Outcome, StatusEvent};
use crate::job::{JobRecord, JobState};

/// What to do with a job whose lease the reaper checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Its worker is alive (or it is not running).
    Alive,
    /// Give the attempt up and queue the next one.
    Requeue { reason: String },
    /// Give the attempt up; it was the last.
    Fail { error: String },
}

/// The reaper's decision for `record` at `now`.
pub fn judge(
    record: &JobRecord,
    now: DateTime<Utc>,
    lease: Duration,
    max_attempts: u32,
) -> Verdict {
    if record.state != JobState::Running {
        return Verdict::Alive;
    }
    let Some(alive) = record.last_sign_of_life() else {
        return Verdict::Alive;
    };
    let silent = (now - alive).to_std().unwrap_or_default();
    if silent <= lease {
        return Verdict::Alive;
    }
    let worker = record.worker.as_deref().unwrap_or("its worker");
    let why = format!(
        "{worker} stopped renewing its lease on attempt {} (silent for {} s, lease {} s)",
        record.attempt,
        silent.as_secs(),
        lease.as_secs()
    );
    // Tries that ran count; moves of a job that never started do not, nor
    // attempts a stopping worker handed back.
    let tries = record
        .attempts
        .iter()
        .filter(|a| a.started_at.is_some() && !a.handed_back)
        .count() as u32;
    if tries >= max_attempts {
        Verdict::Fail {
            error: format!("infrastructure failure after {tries} attempts: {why}"),
        }
    } else {
        Verdict::Requeue { reason: why }
    }
}

/// The event that carries out `verdict` on `record`, if it asks for one.
pub fn event_for(record: &JobRecord, verdict: &Verdict) -> Option<StatusEvent> {
    let kind = match verdict {
        Verdict::Alive => return None,
        Verdict::Requeue { reason } => EventKind::Requeued {
            reason: reason.clone(),
            handed_back: false,
        },
        Verdict::Fail { error } => EventKind::Finished(Outcome {
            state: JobState::Failed,
            started_at: record.started_at,
            elapsed_secs: None,
            exit_code: None,
            error: Some(error.clone()),
            files: Vec::new(),
            infrastructure: true,
        }),
    };
    Some(StatusEvent::new(record.id, record.owner.clone(), kind).for_attempt(record.attempt))
}

/// Time before the next try of a job the infrastructure failed: 2 s, 4 s,
/// 8 s ... at most a minute.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempt.min(6)).min(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobId, QueuedJob};

    fn running(attempt: u32, silent_secs: i64) -> (JobRecord, DateTime<Utc>) {
        let now = Utc::now();
        let mut rec = JobRecord::queued(&QueuedJob {
            id: JobId::new(),
            owner: "ana".into(),
            url: "/r".into(),
            args: vec![],
            config: None,
            timeout_secs: 60,
            limits: Default::default(),
            submitted_at: now,
            attempt,
            not_before: None,
            partition: None,
        });
        rec.state = JobState::Running;
        rec.worker = Some("w1".into());
        // Every attempt so far ran.
        rec.attempts = (1..=attempt)
            .map(|a| crate::job::Attempt {
                attempt: a,
                worker: Some("w1".into()),
                started_at: Some(now - chrono::Duration::seconds(600)),
                last_heartbeat: None,
                ended: None,
                handed_back: false,
            })
            .collect();
        rec.current_attempt_mut().last_heartbeat =
            Some(now - chrono::Duration::seconds(silent_secs));
        (rec, now)
    }

    #[test]
    fn stalled_attempts_are_requeued_then_failed() {
        let lease = Duration::from_secs(30);
        let table = [
            // (attempt, silent for, verdict kind)
            (1, 10, "alive"),
            (1, 30, "alive"),
            (1, 31, "requeue"),
            (2, 120, "requeue"),
            (3, 31, "fail"),
            (5, 31, "fail"),
        ];
        for (attempt, silent, want) in table {
            let (rec, now) = running(attempt, silent);
            let got = match judge(&rec, now, lease, 3) {
                Verdict::Alive => "alive",
                Verdict::Requeue { reason } => {
                    assert!(
                        reason.contains("w1") && reason.contains("lease"),
                        "{reason}"
                    );
                    "requeue"
                }
                Verdict::Fail { error } => {
                    assert!(error.contains("infrastructure"), "{error}");
                    "fail"
                }
            };
            assert_eq!(got, want, "attempt {attempt}, silent {silent} s");
        }
    }

    #[test]
    fn only_running_jobs_are_judged_and_events_carry_the_attempt() {
        let (mut rec, now) = running(2, 600);
        rec.state = JobState::Queued;
        assert_eq!(judge(&rec, now, Duration::from_secs(30), 3), Verdict::Alive);
        rec.state = JobState::Running;
        let verdict = judge(&rec, now, Duration::from_secs(30), 3);
        let ev = event_for(&rec, &verdict).unwrap();
        assert_eq!(ev.attempt, 2);
        assert!(matches!(ev.kind, EventKind::Requeued { .. }));
        let fail = event_for(&rec, &Verdict::Fail { error: "x".into() }).unwrap();
        assert!(
            matches!(fail.kind, EventKind::Finished(ref o) if o.infrastructure && o.state == JobState::Failed)
        );
    }

    #[test]
    fn moves_of_a_job_that_never_started_cost_no_tries() {
        let (mut rec, now) = running(3, 60);
        // Attempts 1 and 2 were moves of a job stranded on a dead partition.
        rec.attempts[0].started_at = None;
        rec.attempts[1].started_at = None;
        let v = judge(&rec, now, Duration::from_secs(30), 3);
        assert!(matches!(v, Verdict::Requeue { .. }), "{v:?}");
    }

    #[test]
    fn attempts_handed_back_by_a_stopping_worker_cost_no_tries() {
        let (mut rec, now) = running(3, 60);
        let lease = Duration::from_secs(30);
        assert!(matches!(judge(&rec, now, lease, 3), Verdict::Fail { .. }));
        // Attempt 2 ran, but its worker was scaled down and gave it back.
        rec.attempts[1].handed_back = true;
        let v = judge(&rec, now, lease, 3);
        assert!(matches!(v, Verdict::Requeue { .. }), "{v:?}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }
}
