//! Status events: what workers (and the frontend, for arrivals and
//! cancellations) publish about a job, and the one projection rule that turns
//! them into a record. Events may arrive late, twice or out of order; the
//! projection only ever moves a job forward.

use crate::job::{JobId, JobRecord, JobState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub job_id: JobId,
    pub owner: String,
    pub at: DateTime<Utc>,
    /// The worker that sent it, if a worker did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The attempt it is about; events of a superseded attempt are ignored.
    #[serde(default = "crate::job::first_attempt")]
    pub attempt: u32,
    #[serde(flatten)]
    pub kind: EventKind,
    /// What the sending worker measured about itself, on a `started`
    /// event (the autoscaler's start-up and rebalance figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberNote>,
}

/// A worker's note about itself, carried by a `started` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberNote {
    /// This is the worker's first job since it started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_job: bool,
    /// How long its last rebalance kept it from consuming (partitions
    /// revoked to partitions assigned), reported once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance_paused_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The job was accepted (published by the frontend).
    Queued { submitted_at: DateTime<Utc> },
    /// A worker started the job.
    Started,
    /// The worker running the attempt renews its lease on it.
    Heartbeat,
    /// The attempt was given up (its worker stalled, or the infrastructure
    /// failed it) and the next one is queued.
    Requeued {
        reason: String,
        /// The worker gave the attempt back unfinished because it was
        /// stopping (a drain): not a failed try, so it costs none of the
        /// job's `max_attempts`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        handed_back: bool,
    },
    /// The job ended; `state` is terminal.
    Finished(Outcome),
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub state: JobState,
    pub started_at: Option<DateTime<Utc>>,
    pub elapsed_secs: Option<f64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub files: Vec<String>,
    /// A failure of the infrastructure, not of the job (after its last attempt).
    #[serde(
        default,
        skip_serializing_if = "std::ops::Not::not",
        deserialize_with = "crate::job::lenient_bool"
    )]
    pub infrastructure: bool,
}

impl StatusEvent {
    pub fn new(job_id: JobId, owner: impl Into<String>, kind: EventKind) -> Self {
        Self {
            job_id,
            owner: owner.into(),
            at: Utc::now(),
            worker: None,
            attempt: crate::job::first_attempt(),
            kind,
            member: None,
        }
    }

    /// The same event, with the worker's note about itself.
    pub fn with_member(mut self, note: MemberNote) -> Self {
        if note != MemberNote::default() {
            self.member = Some(note);
        }
        self
    }

    /// The same event, about attempt `attempt`.
    pub fn for_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The same event, signed by `worker`.
    pub fn from_worker(mut self, worker: &str) -> Self {
        self.worker = Some(worker.to_string());
        self
    }

    /// The state this event moves a job to.
    pub fn state(&self) -> JobState {
        match &self.kind {
            EventKind::Queued { .. } | EventKind::Requeued { .. } => JobState::Queued,
            EventKind::Started | EventKind::Heartbeat => JobState::Running,
            EventKind::Finished(o) => o.state,
        }
    }
}

/// Why an attempt ended when a newer one's events came first.
const SUPERSEDED: &str = "superseded by a newer attempt";

/// Applies an event to a record. Returns whether the record changed.
///
/// The rule: a terminal record never changes. Events of an attempt older
/// than the record's are ignored (that attempt was superseded); an event of
/// a newer one makes that attempt current. Within an attempt an event
/// applies only if it moves the job to a later stage (queued < running <
/// terminal), so a repeated event is a no-op and a late `started` after
/// `finished` is ignored. A heartbeat renews a running attempt's lease; a
/// `requeued` gives the attempt up and queues the next.
pub fn apply(record: &mut JobRecord, event: &StatusEvent) -> bool {
    if event.job_id != record.id {
        return false;
    }
    // Why an attempt was given up may arrive after a newer one took over:
    // it is kept on that attempt's entry, and changes nothing else.
    if let EventKind::Requeued {
        reason,
        handed_back,
    } = &event.kind
    {
        if event.attempt < record.attempt {
            let entry = record
                .attempts
                .iter_mut()
                .find(|a| a.attempt == event.attempt)
                .filter(|a| a.ended.as_deref().is_none_or(|e| e == SUPERSEDED));
            if let Some(a) = entry {
                a.ended = Some(reason.clone());
                a.handed_back = *handed_back;
                return true;
            }
            return false;
        }
    }
    if record.state.is_terminal() || event.attempt < record.attempt {
        return false;
    }
    if event.attempt > record.attempt {
        if matches!(event.kind, EventKind::Queued { .. }) {
            return false;
        }
        // The attempt in between was given up without a word (or the word
        // is late): this one is current now.
        record
            .current_attempt_mut()
            .ended
            .get_or_insert_with(|| SUPERSEDED.into());
        record.attempt = event.attempt;
        record.state = JobState::Queued;
        record.started_at = None;
    }
    // Within an attempt, the worker that started it last owns it: the
    // broker may have handed its message to another worker (a rebalance),
    // which then took it over; the first one's word no longer counts.
    let owner = record
        .attempts
        .last()
        .filter(|a| a.attempt == record.attempt)
        .and_then(|a| a.worker.clone());
    let from_other = matches!((&owner, &event.worker), (Some(o), Some(w)) if o != w);
    if from_other && record.state == JobState::Running {
        if matches!(event.kind, EventKind::Started) {
            record.worker = event.worker.clone();
            record.started_at = Some(event.at);
            let attempt = record.current_attempt_mut();
            attempt.worker = event.worker.clone();
            attempt.started_at = Some(event.at);
            attempt.last_heartbeat = None;
            return true;
        }
        return false;
    }
    match &event.kind {
        EventKind::Heartbeat => {
            if record.state != JobState::Running {
                return false;
            }
            record.current_attempt_mut().last_heartbeat = Some(event.at);
            return true;
        }
        EventKind::Requeued {
            reason,
            handed_back,
        } => {
            let given_up = record.current_attempt_mut();
            given_up.ended = Some(reason.clone());
            given_up.handed_back = *handed_back;
            record.attempt += 1;
            record.state = JobState::Queued;
            record.started_at = None;
            record.worker = None;
            return true;
        }
        _ => {}
    }
    let next = event.state();
    if next.rank() <= record.state.rank() {
        return false;
    }
    record.state = next;
    match &event.kind {
        EventKind::Queued { .. } | EventKind::Heartbeat | EventKind::Requeued { .. } => {}
        EventKind::Started => {
            record.started_at = Some(event.at);
            record.worker = event.worker.clone();
            let attempt = record.current_attempt_mut();
            attempt.worker = event.worker.clone();
            attempt.started_at = Some(event.at);
        }
        EventKind::Finished(o) => {
            if event.worker.is_some() {
                record.worker = event.worker.clone();
                // Its `started` may not have been seen (yet): the attempt
                // that ended is on record all the same.
                let attempt = record.current_attempt_mut();
                attempt
                    .worker
                    .get_or_insert_with(|| event.worker.clone().unwrap_or_default());
                if attempt.started_at.is_none() {
                    attempt.started_at = o.started_at;
                }
            }
            if record.started_at.is_none() {
                record.started_at = o.started_at;
            }
            record.finished_at = Some(event.at);
            record.elapsed_secs = o.elapsed_secs;
            record.exit_code = o.exit_code;
            record.error = o.error.clone();
            record.files = o.files.clone();
            record.infrastructure_failure = o.infrastructure;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::QueuedJob;

    fn record() -> JobRecord {
        JobRecord::queued(&QueuedJob {
            id: JobId::new(),
            owner: "ana".into(),
            url: "https://u:secret@example.com/r.git".into(),
            args: vec![],
            config: Some("{}".into()),
            timeout_secs: 60,
            limits: Default::default(),
            submitted_at: Utc::now(),
            attempt: 1,
            not_before: None,
            partition: None,
        })
    }

    fn finished(rec: &JobRecord, state: JobState) -> StatusEvent {
        StatusEvent::new(
            rec.id,
            "ana",
            EventKind::Finished(Outcome {
                state,
                started_at: Some(Utc::now()),
                elapsed_secs: Some(1.5),
                exit_code: Some(0),
                error: None,
                files: vec!["stdout.log".into()],
                infrastructure: false,
            }),
        )
    }

    #[test]
    fn record_hides_credentials_and_config() {
        let rec = record();
        assert!(!rec.url.contains("secret"));
        assert_eq!(rec.config_bytes, Some(2));
    }

    #[test]
    fn events_move_forward_only() {
        let mut rec = record();
        let started = StatusEvent::new(rec.id, "ana", EventKind::Started);
        assert!(apply(&mut rec, &started));
        assert_eq!(rec.state, JobState::Running);
        // Repeated: no change.
        assert!(!apply(&mut rec, &started));
        let done = finished(&rec, JobState::Succeeded);
        assert!(apply(&mut rec, &done));
        assert_eq!(rec.state, JobState::Succeeded);
        assert_eq!(rec.files, vec!["stdout.log".to_string()]);
        // Late events never move it back or sideways.
        assert!(!apply(&mut rec, &started));
        let failed = finished(&rec, JobState::Failed);
        assert!(!apply(&mut rec, &failed));
        assert_eq!(rec.state, JobState::Succeeded);
    }

    #[test]
    fn finished_before_started_keeps_the_start_time() {
        let mut rec = record();
        let done = finished(&rec, JobState::Failed);
        assert!(apply(&mut rec, &done));
        assert_eq!(rec.state, JobState::Failed);
        assert!(rec.started_at.is_some());
        let started = StatusEvent::new(rec.id, "ana", EventKind::Started);
        assert!(!apply(&mut rec, &started));
    }

    #[test]
    fn events_for_another_job_are_ignored() {
        let mut rec = record();
        let other = StatusEvent::new(JobId::new(), "ana", EventKind::Started);
        assert!(!apply(&mut rec, &other));
        assert_eq!(rec.state, JobState::Queued);
    }

    #[test]
    fn a_superseded_attempt_never_changes_the_record() {
        let mut rec = record();
        let started = StatusEvent::new(rec.id, "ana", EventKind::Started).from_worker("w1");
        assert!(apply(&mut rec, &started));
        let beat = StatusEvent::new(rec.id, "ana", EventKind::Heartbeat);
        assert!(apply(&mut rec, &beat));
        assert_eq!(rec.attempts[0].last_heartbeat, Some(beat.at));
        assert_eq!(rec.last_sign_of_life(), Some(beat.at));
        // The reaper gives attempt 1 up.
        let requeued = StatusEvent::new(
            rec.id,
            "ana",
            EventKind::Requeued {
                reason: "w1 stopped renewing its lease".into(),
                handed_back: false,
            },
        );
        assert!(apply(&mut rec, &requeued));
        assert_eq!((rec.state, rec.attempt), (JobState::Queued, 2));
        // Attempt 1 wakes up and reports: ignored, whatever it says.
        assert!(!apply(&mut rec, &beat));
        assert!(!apply(&mut rec, &started));
        let late = finished(&rec, JobState::Succeeded);
        assert!(!apply(&mut rec, &late));
        assert_eq!(rec.state, JobState::Queued);
        // Attempt 2 runs and ends.
        let s2 = StatusEvent::new(rec.id, "ana", EventKind::Started)
            .from_worker("w2")
            .for_attempt(2);
        assert!(apply(&mut rec, &s2));
        let done = finished(&rec, JobState::Failed).for_attempt(2);
        assert!(apply(&mut rec, &done));
        assert_eq!(rec.state, JobState::Failed);
        assert_eq!(rec.worker.as_deref(), Some("w2"));
        let seen: Vec<_> = rec
            .attempts
            .iter()
            .map(|a| (a.attempt, a.worker.clone()))
            .collect();
        assert_eq!(seen, vec![(1, Some("w1".into())), (2, Some("w2".into()))]);
        assert!(rec.attempts[0].ended.as_deref().unwrap().contains("lease"));
    }

    #[test]
    fn an_attempt_handed_back_is_marked_so_on_the_record() {
        let mut rec = record();
        let started = StatusEvent::new(rec.id, "ana", EventKind::Started).from_worker("w1");
        assert!(apply(&mut rec, &started));
        let back = StatusEvent::new(
            rec.id,
            "ana",
            EventKind::Requeued {
                reason: "w1 shut down during the attempt".into(),
                handed_back: true,
            },
        )
        .from_worker("w1");
        assert!(apply(&mut rec, &back));
        assert_eq!((rec.state, rec.attempt), (JobState::Queued, 2));
        assert!(rec.attempts[0].handed_back);
        // On the wire only where it is true.
        let text = serde_json::to_string(&back).unwrap();
        assert!(text.contains("\"handed_back\":true"), "{text}");
        let stalled = EventKind::Requeued {
            reason: "quiet".into(),
            handed_back: false,
        };
        assert!(!serde_json::to_string(&stalled)
            .unwrap()
            .contains("handed_back"));
    }

    #[test]
    fn a_worker_that_took_an_attempt_over_owns_it() {
        let mut rec = record();
        let w = |kind: EventKind, who: &str| StatusEvent::new(rec.id, "ana", kind).from_worker(who);
        let (s1, s2) = (w(EventKind::Started, "w1"), w(EventKind::Started, "w2"));
        let (b1, b2) = (w(EventKind::Heartbeat, "w1"), w(EventKind::Heartbeat, "w2"));
        assert!(apply(&mut rec, &s1));
        assert!(apply(&mut rec, &s2), "w2 took it over");
        assert_eq!(rec.worker.as_deref(), Some("w2"));
        assert!(!apply(&mut rec, &b1), "w1's word no longer counts");
        assert!(apply(&mut rec, &b2));
        let mut done1 = finished(&rec, JobState::Failed);
        done1.worker = Some("w1".into());
        assert!(!apply(&mut rec, &done1));
        let mut done2 = finished(&rec, JobState::Succeeded);
        done2.worker = Some("w2".into());
        assert!(apply(&mut rec, &done2));
        assert_eq!((rec.state, rec.attempts.len()), (JobState::Succeeded, 1));
    }

    #[test]
    fn a_newer_attempts_event_makes_it_current() {
        let mut rec = record();
        let s1 = StatusEvent::new(rec.id, "ana", EventKind::Started);
        assert!(apply(&mut rec, &s1));
        // Its `requeued` is late: attempt 2 already started.
        let s2 = StatusEvent::new(rec.id, "ana", EventKind::Started).for_attempt(2);
        assert!(apply(&mut rec, &s2));
        assert_eq!((rec.state, rec.attempt), (JobState::Running, 2));
        let late = StatusEvent::new(
            rec.id,
            "ana",
            EventKind::Requeued {
                reason: "w1 stopped renewing its lease".into(),
                handed_back: false,
            },
        );
        // Only the old attempt's reason changes.
        assert!(apply(&mut rec, &late));
        assert_eq!((rec.state, rec.attempt), (JobState::Running, 2));
        assert_eq!(
            rec.attempts[0].ended.as_deref(),
            Some("w1 stopped renewing its lease")
        );
        assert!(!apply(&mut rec, &late), "once");
        // A heartbeat before a start moves nothing.
        let mut fresh = record();
        let beat = StatusEvent::new(fresh.id, "ana", EventKind::Heartbeat);
        assert!(!apply(&mut fresh, &beat));
    }

    #[test]
    fn events_serialize_with_a_tag() {
        let rec = record();
        let ev = StatusEvent::new(rec.id, "ana", EventKind::Started);
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["event"], "started");
        let back: StatusEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }
}
