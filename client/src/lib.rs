//! Typed calls over the Kumulus REST API: log in, submit, read, list and
//! cancel jobs, download their files, read the metrics. The CLI, the load
//! generator and the black-box tests use it instead of writing requests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kumulus_client::ClientError> {
//! use kumulus_client::{Client, NewJob};
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let session = client.login("ana", "ana-password").await?;
//! let job = session.submit(&NewJob::repo("https://example.org/repo.git")).await?;
//! let job = session.job(&job.id).await?;
//! println!("{} is {}", job.id, job.state);
//! # Ok(()) }
//! ```

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use kumulus_core::job::JobState;
pub use logs::{LogChunk, LogEvent, LogEvents, LogStream};

mod logs;

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error: its status, its `error.code` and
    /// `error.message` where it gave them.
    #[error("{status}: {message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// The request did not get an answer (connection refused, timeout).
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The answer was not what the API promises.
    #[error("unexpected answer: {0}")]
    Decode(String),
    #[error("bad URL: {0}")]
    Url(String),
}

impl ClientError {
    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A job to submit (`POST /api/jobs`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewJob {
    pub url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

impl NewJob {
    pub fn repo(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }
}

/// One attempt at running a job.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    #[serde(default)]
    pub worker: Option<String>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_heartbeat: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended: Option<String>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Job {
    pub id: String,
    pub owner: String,
    pub url: String,
    #[serde(default)]
    pub args: Vec<String>,
    pub state: JobState,
    pub submitted_at: DateTime<Utc>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub elapsed_secs: Option<f64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub worker: Option<String>,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

impl Job {
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

/// The answer to a submission (201): the new job's id and state.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Accepted {
    pub id: String,
    pub state: JobState,
}

/// One page of `GET /api/jobs`.
#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    pub jobs: Vec<Job>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

/// A Kumulus server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client of the server at `base` (`http://host:port`), with a 30 s
    /// limit per request.
    pub fn new(base: &str) -> Result<Self> {
        Self::with_timeout(base, Duration::from_secs(30))
    }

    pub fn with_timeout(base: &str, timeout: Duration) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Url(format!(
                "{base}: expected http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // The API closes keep-alive connections idle for its header
            // timeout (10 s by default): never reuse one that old.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Self { http, base })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Logs in (`POST /auth/token`): a session that sends the token. The
    /// session keeps the credentials, and when the server refuses its token
    /// (it expired: Keycloak's last five minutes by default) it logs in
    /// again and sends the call once more, so a long run outlives its
    /// first token.
    pub async fn login(&self, user: &str, password: &str) -> Result<Session> {
        let token = self.token(user, password).await?;
        Ok(Session {
            client: self.clone(),
            auth: Arc::new(Auth {
                token: RwLock::new(token),
                login: Some((user.to_string(), password.to_string())),
                renewing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    async fn token(&self, user: &str, password: &str) -> Result<String> {
        let resp = self
            .http
            .post(self.url("/auth/token"))
            .json(&serde_json::json!({"username": user, "password": password}))
            .send()
            .await
            .map_err(transport)?;
        let answer: TokenAnswer = decode(resp).await?;
        Ok(answer.access_token)
    }

    /// A session with a token obtained elsewhere; it is not renewed (a
    /// refused token is the caller's `401`).
    pub fn session(&self, token: impl Into<String>) -> Session {
        Session {
            client: self.clone(),
            auth: Arc::new(Auth {
                token: RwLock::new(token.into()),
                login: None,
                renewing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let resp = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .map_err(transport)?;
        let resp = check(resp).await?;
        resp.text().await.map_err(transport)
    }
}

/// `GET /api/autoscaler`: aggregates only, no job or user in it.
#[derive(Debug, Clone, Deserialize)]
pub struct Autoscaler {
    /// Newest first.
    pub decisions: Vec<kumulus_core::observation::ScalingDecision>,
    /// The seed's observations, newest first.
    pub observations: Vec<kumulus_core::observation::Observation>,
}

/// A logged-in user's calls. Clones share one token.
#[derive(Debug, Clone)]
pub struct Session {
    client: Client,
    auth: Arc<Auth>,
}

/// The token in use, and what renews it.
struct Auth {
    token: RwLock<String>,
    /// The user and password of [`Client::login`], to log in again.
    login: Option<(String, String)>,
    /// One renewal at a time: calls refused together log in once.
    renewing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the token nor the password.
        f.debug_struct("Auth")
            .field("user", &self.login.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The token in use now.
    pub fn token(&self) -> String {
        self.auth
            .token
            .read()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Sends `method path`, shaped by `shape` (query, body, timeout). A
    /// `401` to a session that can log in again renews the token (once for
    /// all the calls it refused) and sends the request again, once.
    async fn send(
        &self,
        method: Method,
        path: &str,
        shape: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let build = |token: &str| {
            shape(
                self.client
                    .http
                    .request(method.clone(), self.client.url(path))
                    .bearer_auth(token),
            )
        };
        let token = self.token();
        let resp = build(&token).send().await.map_err(transport)?;
        if resp.status() != StatusCode::UNAUTHORIZED || self.auth.login.is_none() {
            return Ok(resp);
        }
        let token = self.renew(&token).await?;
        build(&token).send().await.map_err(transport)
    }

    /// A token in place of `refused`: logs in again, unless another call
    /// did meanwhile.
    async fn renew(&self, refused: &str) -> Result<String> {
        let _one = self.auth.renewing.lock().await;
        let now = self.token();
        if now != refused {
            return Ok(now);
        }
        let Some((user, password)) = &self.auth.login else {
            return Ok(now);
        };
        let fresh = self.client.token(user, password).await?;
        if let Ok(mut t) = self.auth.token.write() {
            t.clone_from(&fresh);
        }
        Ok(fresh)
    }

    /// Submits a job; the answer is its id, queued.
    pub async fn submit(&self, job: &NewJob) -> Result<Accepted> {
        let resp = self
            .send(Method::POST, "/api/jobs", |r| r.json(job))
            .await?;
        decode(resp).await
    }

    pub async fn job(&self, id: &str) -> Result<Job> {
        let resp = self
            .send(Method::GET, &format!("/api/jobs/{id}"), |r| r)
            .await?;
        decode(resp).await
    }

    /// The autoscaler's recent decisions and observations, newest first
    /// (`limit` decisions, or all the frontend keeps).
    pub async fn autoscaler(&self, limit: Option<u32>) -> Result<Autoscaler> {
        let resp = self
            .send(Method::GET, "/api/autoscaler", |r| match limit {
                Some(n) => r.query(&[("limit", n)]),
                None => r,
            })
            .await?;
        decode(resp).await
    }

    /// One page of the caller's jobs, newest first.
    pub async fn page(
        &self,
        state: Option<JobState>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page> {
        let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(s) = state {
            query.push(("state", s.to_string()));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c.to_string()));
        }
        let resp = self
            .send(Method::GET, "/api/jobs", |r| r.query(&query))
            .await?;
        decode(resp).await
    }

    /// Every job of the caller, newest first (all pages).
    pub async fn jobs(&self, state: Option<JobState>) -> Result<Vec<Job>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.page(state, 100, cursor.as_deref()).await?;
            all.extend(page.jobs);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    /// `DELETE /api/jobs/{id}`: removes the job with its files; a queued or
    /// running one is cancelled first (the answer is its last record,
    /// cancelled). Either way it is gone.
    pub async fn delete(&self, id: &str) -> Result<Deleted> {
        let resp = self
            .send(Method::DELETE, &format!("/api/jobs/{id}"), |r| r)
            .await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(Deleted::Removed);
        }
        decode(resp)
            .await
            .map(|job| Deleted::Cancelled(Box::new(job)))
    }

    /// `POST /api/jobs/{id}/cancel`: cancels a queued or running job, and
    /// never deletes one (a job that has ended is a `conflict` error).
    pub async fn cancel(&self, id: &str) -> Result<Job> {
        let resp = self
            .send(Method::POST, &format!("/api/jobs/{id}/cancel"), |r| r)
            .await?;
        decode(resp).await
    }

    /// A file of a job (`stdout.log`, `stderr.log`, or one under output/).
    pub async fn file(&self, id: &str, name: &str) -> Result<Vec<u8>> {
        let resp = self
            .send(Method::GET, &format!("/api/jobs/{id}/files/{name}"), |r| r)
            .await?;
        let resp = check(resp).await?;
        Ok(resp.bytes().await.map_err(transport)?.to_vec())
    }

    /// The job's stdout and stderr as events: what there is now, or with
    /// `follow`, everything until the job ends (then [`LogEvent::End`]).
    /// The stream has no time limit of its own.
    pub async fn logs(&self, id: &str, follow: bool) -> Result<LogEvents> {
        let resp = self
            .send(Method::GET, &format!("/api/jobs/{id}/logs"), |r| {
                r.query(&[("follow", follow)])
                    .timeout(Duration::from_secs(7 * 24 * 3600))
            })
            .await?;
        Ok(LogEvents::new(check(resp).await?))
    }

    /// A file of a job as it arrives, for large ones: its length when the
    /// server says it, and its bytes chunk by chunk.
    pub async fn download(&self, id: &str, name: &str) -> Result<Download> {
        let path = name
            .split('/')
            .map(|p| {
                p.replace('%', "%25")
                    .replace('?', "%3F")
                    .replace('#', "%23")
            })
            .collect::<Vec<_>>()
            .join("/");
        let resp = self
            .send(Method::GET, &format!("/api/jobs/{id}/files/{path}"), |r| {
                r.timeout(Duration::from_secs(24 * 3600))
            })
            .await?;
        let resp = check(resp).await?;
        Ok(Download {
            len: resp.content_length(),
            resp,
        })
    }

    /// Polls the job every `every` until it is terminal or `within` passed.
    pub async fn wait(&self, id: &str, every: Duration, within: Duration) -> Result<Job> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let job = self.job(id).await?;
            if job.is_terminal() || std::time::Instant::now() >= deadline {
                return Ok(job);
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// A file being downloaded.
pub struct Download {
    /// Its length, when the server said it.
    pub len: Option<u64>,
    resp: reqwest::Response,
}

impl Download {
    /// The next bytes; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(self
            .resp
            .chunk()
            .await
            .map_err(transport)?
            .map(|b| b.to_vec()))
    }
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum Deleted {
    /// The job was queued or running; it is cancelled now.
    Cancelled(Box<Job>),
    /// The job had ended; its record and files are gone.
    Removed,
}

fn transport(e: reqwest::Error) -> ClientError {
    ClientError::Transport(e.to_string())
}

/// The response if it is a success; else the API's error.
async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    let message = body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    Err(ClientError::Api {
        status,
        code,
        message,
    })
}

async fn decode<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
    let resp = check(resp).await?;
    let bytes = resp.bytes().await.map_err(transport)?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_record_as_the_api_writes_it_reads_back() {
        let text = r#"{"id":"01a23124-9c86-70f7-b3e1-24525679bb82","owner":"ana","url":"/tmp/x","args":[],"config_bytes":null,"timeout_secs":600,"state":"queued","submitted_at":"2026-12-01T10:26:52.678864930Z","started_at":null,"finished_at":null,"elapsed_secs":null,"exit_code":null,"error":null,"files":[],"worker":null,"attempt":2,"attempts":[{"attempt":1,"worker":"w1","started_at":"2026-12-01T10:26:52.910766286Z","last_heartbeat":null,"ended":"gone"}],"infrastructure_failure":false}"#;
        let job: Job = serde_json::from_str(text).unwrap();
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.attempts[0].worker.as_deref(), Some("w1"));
        assert!(!job.is_terminal());
    }
}
