//! Job identity, state machine and the record a user sees.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A job's id: a UUID v7, so ids sort by submission time.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, format = Uuid)]
pub struct JobId(uuid::Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A string that is not a job id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a job id")]
pub struct InvalidJobId;

impl FromStr for JobId {
    type Err = InvalidJobId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical hyphenated form: one id, one spelling.
        if s.len() != 36 {
            return Err(InvalidJobId);
        }
        uuid::Uuid::try_parse(s).map(Self).map_err(|_| InvalidJobId)
    }
}

/// `queued` -> `running` -> one of the terminal states. Terminal states never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 2
    }

    /// How far along the state machine a state is; events only move a job forward.
    pub fn rank(self) -> u8 {
        match self {
            JobState::Queued => 0,
            JobState::Running => 1,
            _ => 2,
        }
    }

    /// The seed's state names, for its routes. `timed_out` has no name of its
    /// own there: it is a failure ("Fallido").
    pub fn seed_name(self) -> &'static str {
        match self {
            JobState::Queued => "En espera",
            JobState::Running => "Lanzado",
            JobState::Succeeded => "Finalizado",
            JobState::Failed | JobState::TimedOut => "Fallido",
            JobState::Cancelled => "Eliminado",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state `{s}`; expected one of queued, running, succeeded, failed, cancelled, timed_out"
                )
            })
    }
}

/// What a worker receives: everything needed to run the job, including the
/// unredacted URL. It travels on the queue only and is never shown to anyone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedJob {
    pub id: JobId,
    pub owner: String,
    pub url: String,
    pub args: Vec<String>,
    pub config: Option<String>,
    pub timeout_secs: u64,
    /// Lower limits the job asked for (the worker's own are the ceiling).
    #[serde(default, skip_serializing_if = "JobLimits::is_empty")]
    pub limits: JobLimits,
    pub submitted_at: DateTime<Utc>,
    /// Which try this is (1 first). A job queued again after its worker
    /// stalled or the infrastructure failed it is a new attempt; events
    /// and files of older attempts are ignored.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// A retry waits for its backoff: no worker starts it before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The queue partition it was placed on, where the queue has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
}

pub fn first_attempt() -> u32 {
    1
}

/// A flag read back from a store that may keep booleans as numbers (the
/// MongoDB stand-in over SQLite does): `true`/`false`, or 0/1.
pub fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Int(n) => n != 0,
    })
}

/// One try at running a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub worker: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    /// The worker's last renewal of its lease on the job.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Why this attempt was given up, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// Its worker gave it back unfinished as it stopped (a drain): it
    /// does not count as one of the job's tries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handed_back: bool,
}

/// Limits a job may ask for, each lower than the worker's (`worker.*`);
/// absent ones are the worker's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_max_files: Option<u64>,
}

impl JobLimits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The job as users and the store see it. The URL is redacted, and the
/// config text is not kept here (it may hold secrets): only its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobRecord {
    pub id: JobId,
    pub owner: String,
    pub url: String,
    pub args: Vec<String>,
    pub config_bytes: Option<u64>,
    pub timeout_secs: u64,
    /// The lower limits the job asked for.
    #[serde(default, skip_serializing_if = "JobLimits::is_empty")]
    pub limits: JobLimits,
    pub state: JobState,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub elapsed_secs: Option<f64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub files: Vec<String>,
    /// The worker that ran (or runs) the job.
    #[serde(default)]
    pub worker: Option<String>,
    /// The current attempt (1 first).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// Every attempt that started or was given up, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// The job failed because of the infrastructure (its worker stalled,
    /// the remote could not be reached, an upload failed), after its last
    /// attempt: not because of the job itself.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub infrastructure_failure: bool,
    /// Where the record is POSTed when the job ends, and how that went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<crate::webhook::Delivery>,
}

impl JobRecord {
    /// The current attempt's entry, made if missing.
    pub fn current_attempt_mut(&mut self) -> &mut Attempt {
        let n = self.attempt;
        if self.attempts.last().map(|a| a.attempt) != Some(n) {
            self.attempts.push(Attempt {
                attempt: n,
                worker: None,
                started_at: None,
                last_heartbeat: None,
                ended: None,
                handed_back: false,
            });
        }
        let last = self.attempts.len() - 1;
        &mut self.attempts[last]
    }

    /// When the current attempt last showed it is alive: its last
    /// heartbeat, else its start.
    pub fn last_sign_of_life(&self) -> Option<DateTime<Utc>> {
        self.attempts
            .last()
            .filter(|a| a.attempt == self.attempt)
            .and_then(|a| a.last_heartbeat.or(a.started_at))
            .or(self.started_at)
    }
}

impl JobRecord {
    /// The record of a job just accepted.
    pub fn queued(job: &QueuedJob) -> Self {
        Self {
            id: job.id,
            owner: job.owner.clone(),
            url: crate::redact::redact_url(&job.url),
            args: job.args.clone(),
            config_bytes: job.config.as_ref().map(|c| c.len() as u64),
            timeout_secs: job.timeout_secs,
            limits: job.limits.clone(),
            state: JobState::Queued,
            submitted_at: job.submitted_at,
            started_at: None,
            finished_at: None,
            elapsed_secs: None,
            exit_code: None,
            error: None,
            files: Vec::new(),
            worker: None,
            attempt: job.attempt,
            attempts: Vec::new(),
            infrastructure_failure: false,
            webhook: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_other_spellings() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!("not-an-id".parse::<JobId>().is_err());
        let simple = id.to_string().replace('-', "");
        assert!(simple.parse::<JobId>().is_err());
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b);
    }

    #[test]
    fn flags_read_back_as_numbers_are_flags() {
        #[derive(Deserialize)]
        struct F {
            #[serde(deserialize_with = "lenient_bool")]
            f: bool,
        }
        for (text, want) in [
            (r#"{"f":true}"#, true),
            (r#"{"f":0}"#, false),
            (r#"{"f":1}"#, true),
        ] {
            assert_eq!(serde_json::from_str::<F>(text).unwrap().f, want, "{text}");
        }
        assert!(serde_json::from_str::<F>(r#"{"f":"yes"}"#).is_err());
    }

    #[test]
    fn states_parse_and_rank() {
        for st in JobState::ALL {
            assert_eq!(st.as_str().parse::<JobState>().unwrap(), st);
        }
        assert!("done".parse::<JobState>().is_err());
        assert!(JobState::TimedOut.is_terminal());
        assert!(!JobState::Running.is_terminal());
        assert_eq!(JobState::TimedOut.seed_name(), "Fallido");
    }
}
