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
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The job was accepted (published by the frontend).
    Queued { submitted_at: DateTime<Utc> },
    /// A worker started the job.
    Started,
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
}

impl StatusEvent {
    pub fn new(job_id: JobId, owner: impl Into<String>, kind: EventKind) -> Self {
        Self {
            job_id,
            owner: owner.into(),
            at: Utc::now(),
            worker: None,
            kind,
        }
    }

    /// The same event, signed by `worker`.
    pub fn from_worker(mut self, worker: &str) -> Self {
        self.worker = Some(worker.to_string());
        self
    }

    /// The state this event moves a job to.
    pub fn state(&self) -> JobState {
        match &self.kind {
            EventKind::Queued { .. } => JobState::Queued,
            EventKind::Started => JobState::Running,
            EventKind::Finished(o) => o.state,
        }
    }
}

/// Applies an event to a record. Returns whether the record changed.
///
/// The rule: an event applies only if it moves the job to a later stage
/// (queued < running < terminal). So a terminal record never changes, a
/// repeated event is a no-op, and a late `started` after `finished` is ignored.
pub fn apply(record: &mut JobRecord, event: &StatusEvent) -> bool {
    if event.job_id != record.id {
        return false;
    }
    let next = event.state();
    if next.rank() <= record.state.rank() {
        return false;
    }
    record.state = next;
    match &event.kind {
        EventKind::Queued { .. } => {}
        EventKind::Started => {
            record.started_at = Some(event.at);
            record.worker = event.worker.clone();
        }
        EventKind::Finished(o) => {
            if event.worker.is_some() {
                record.worker = event.worker.clone();
            }
            if record.started_at.is_none() {
                record.started_at = o.started_at;
            }
            record.finished_at = Some(event.at);
            record.elapsed_secs = o.elapsed_secs;
            record.exit_code = o.exit_code;
            record.error = o.error.clone();
            record.files = o.files.clone();
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
    fn events_serialize_with_a_tag() {
        let rec = record();
        let ev = StatusEvent::new(rec.id, "ana", EventKind::Started);
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["event"], "started");
        let back: StatusEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }
}
