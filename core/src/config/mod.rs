//! Configuration: defaults, then a TOML file, then `KUMULUS_*` environment
//! variables (`__` for nesting, e.g. `KUMULUS_WORKER__SLOTS=4`). Loaded and
//! validated once at start; a bad value is one error that names its key.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::submission::{Limits, RepoPolicy};

mod backends;
mod seconds;
pub use backends::{KafkaConfig, MongoConfig, OidcConfig, S3Config, Secret};
pub use seconds::Seconds;

/// Which deployment the process is part of; it picks some defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `kumulus up`: one process, embedded backends, local repositories allowed.
    Standalone,
    /// Separate services with production backends.
    Production,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// Where embedded backends keep their data.
    pub data_dir: PathBuf,
    pub api: ApiConfig,
    pub worker: WorkerConfig,
    pub auth: AuthConfig,
    pub autoscaler: AutoscalerConfig,
    pub kafka: KafkaConfig,
    pub mongo: MongoConfig,
    pub s3: S3Config,
    pub oidc: OidcConfig,
    pub retention: RetentionConfig,
    pub webhooks: WebhooksConfig,
    /// The file this configuration was read from (jobs must not see it).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// Webhooks: where a job's `callback_url` may point, and how it is signed
/// and retried ([`crate::webhook`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Hosts a callback may go to; empty: any public host.
    pub allow_hosts: Vec<String>,
    pub allow_http: bool,
    /// Loopback, private and link-local addresses (refused otherwise).
    pub allow_private: bool,
    /// The signing key (`webhook-signature`); callbacks are refused until
    /// it is set.
    pub secret: Option<Secret>,
    /// How long after a job's end its webhook is retried.
    pub retry_for_secs: u64,
    /// Time limit of one try.
    pub timeout_secs: u64,
    /// How often pending deliveries are looked for.
    pub poll_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_hosts: Vec::new(),
            allow_http: false,
            allow_private: false,
            secret: None,
            retry_for_secs: 86_400,
            timeout_secs: 10,
            poll_ms: 1000,
        }
    }
}

impl WebhooksConfig {
    pub fn rules(&self) -> crate::webhook::Rules {
        crate::webhook::Rules {
            allow_hosts: self.allow_hosts.clone(),
            allow_http: self.allow_http,
            allow_private: self.allow_private,
        }
    }
}

/// How long ended jobs are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Ended jobs older than this many days (from their end) lose their
    /// record and their files; absent: kept until deleted.
    pub days: Option<f64>,
    /// Time between sweeps.
    pub sweep_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            days: None,
            sweep_secs: 3600,
        }
    }
}

impl RetentionConfig {
    /// How long an ended job is kept, if not for ever.
    pub fn keep(&self) -> Option<std::time::Duration> {
        self.days
            .map(|d| std::time::Duration::from_secs_f64(d * 86_400.0))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalerConfig {
    /// Length of an observation period (and of the decision loop).
    pub period_secs: u64,
    /// `seed`, `lag` or `kumulus`.
    pub policy: String,
    /// 95% of jobs should wait at most this long to start.
    pub slo_wait_secs: f64,
    /// Time from asking the platform for a worker to its first job, or
    /// `"measured"`: learnt from the workers it starts (10 s until then).
    pub startup_secs: Seconds,
    pub min_workers: u32,
    pub max_workers: u32,
    /// Worker-seconds allowed in any hour (absent: no budget).
    pub budget_worker_secs_per_hour: Option<f64>,
    /// `lag`: jobs per worker.
    pub lag_threshold: f64,
    /// `lag`: scale-down hold.
    pub cooldown_secs: f64,
    /// `kumulus`: scale-down stabilization window.
    pub stabilization_secs: f64,
    /// `kumulus`: how long the workers stop when one joins or leaves (a
    /// Kafka rebalance); adding a worker must be worth that. Or
    /// `"measured"`: learnt from the workers' own pauses (3 s until then).
    pub rebalance_secs: Seconds,
    /// With `min_workers = 0`: idle this long before scaling to zero (the
    /// `kumulus` policy: at most this long, see `policy::idle_grace`).
    pub idle_grace_secs: f64,
    /// Partitions of the jobs topic kept per worker (at least).
    pub partition_factor: u32,
    /// `dry-run`, `command`, `kumori` or `process`.
    pub driver: String,
    /// `command` driver: the program and its first arguments; the desired
    /// count is appended.
    pub command: Vec<String>,
    /// `kumori` driver: the deployment manifest, and the deployment's name.
    pub kumori_manifest: PathBuf,
    pub kumori_deployment: String,
    /// `kumori` driver: `kam` (`kam ctl ...`) or `kumorictl`.
    pub kumori_cli: String,
    /// `kumori` driver: the tool's path; empty for its name on PATH.
    pub kumori_program: PathBuf,
    /// `kumori` driver: the role it scales.
    pub kumori_role: String,
    /// `kumori` driver: `--wait` of each update.
    pub kumori_wait: String,
    /// `kumori` driver: the user it logs in as when the tool says it is not
    /// logged in (empty: it never logs in), and the password, from a secret
    /// (`KUMULUS_AUTOSCALER__KUMORI_PASSWORD`).
    pub kumori_user: String,
    pub kumori_password: Secret,
    /// `process` driver: the command that runs one worker (no shell);
    /// empty for this executable's `worker`, with this configuration file.
    pub process_command: Vec<String>,
    /// `process` driver: where each worker's log goes (`<id>.log`); empty
    /// for `<data_dir>/workers`.
    pub process_log_dir: PathBuf,
    /// `process` driver: `stop` the workers when the autoscaler stops, or
    /// `leave` them running.
    pub process_on_stop: String,
    /// Time limit of one driver call.
    pub driver_timeout_secs: u64,
    /// Where the autoscaler serves `/metrics` and `/health`.
    pub listen: SocketAddr,
}

/// The start-up time assumed until one is measured.
pub const DEFAULT_STARTUP_SECS: f64 = 10.0;
/// The rebalance pause assumed until one is measured.
pub const DEFAULT_REBALANCE_SECS: f64 = 3.0;

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            period_secs: 10,
            policy: "kumulus".into(),
            slo_wait_secs: 30.0,
            startup_secs: Seconds::Fixed(DEFAULT_STARTUP_SECS),
            min_workers: 1,
            max_workers: 10,
            budget_worker_secs_per_hour: None,
            lag_threshold: 5.0,
            cooldown_secs: 300.0,
            stabilization_secs: 30.0,
            rebalance_secs: Seconds::Fixed(DEFAULT_REBALANCE_SECS),
            idle_grace_secs: 300.0,
            partition_factor: 2,
            driver: "dry-run".into(),
            command: Vec::new(),
            kumori_manifest: PathBuf::from("kumori/deployments/system/manifest.cue"),
            kumori_deployment: "kumulus".into(),
            kumori_cli: "kam".into(),
            kumori_program: PathBuf::new(),
            kumori_role: "worker".into(),
            kumori_wait: "5m".into(),
            kumori_user: String::new(),
            kumori_password: Secret::default(),
            process_command: Vec::new(),
            process_log_dir: PathBuf::new(),
            process_on_stop: "stop".into(),
            driver_timeout_secs: 600,
            listen: SocketAddr::from(([127, 0, 0, 1], 9300)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body accepted (413 above it).
    pub body_limit_bytes: usize,
    /// Requests a second allowed per user on `/api` (429 above it).
    pub rate_per_sec: u32,
    /// Burst of requests allowed above the steady rate.
    pub rate_burst: u32,
    /// Connections served at once; more get a 503 and are closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this.
    pub header_timeout_secs: u64,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout_secs: u64,
    /// A request's body must arrive within this (408 after).
    pub body_timeout_secs: u64,
    /// On stop, open connections get this long to finish, then are closed.
    pub shutdown_deadline_secs: u64,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl_secs: u64,
    /// Live logs kept per running job for followers who join late (the
    /// oldest go first past it).
    pub live_logs_buffer_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs a worker runs at once.
    pub slots: usize,
    /// Time limit of a job that asks for none.
    pub timeout_secs: u64,
    /// Largest time limit a job may ask for.
    pub max_timeout_secs: u64,
    /// Largest stdout.log and stderr.log kept, each; the rest is dropped.
    pub log_limit_bytes: u64,
    /// Largest total size of the files a job leaves under output/.
    pub output_limit_bytes: u64,
    /// Most files a job may leave under output/.
    pub output_max_files: usize,
    /// Time limit of `git clone`.
    pub clone_timeout_secs: u64,
    /// On shutdown, how long a running job may go on before it is stopped
    /// and handed back to the queue.
    pub shutdown_grace_secs: u64,
    /// URL schemes a repository may use.
    pub allowed_schemes: Vec<String>,
    /// Accept absolute paths and `file://` URLs as repositories.
    pub allow_local_repos: bool,
    /// Where work folders are made (default: `<data_dir>/work`).
    pub work_dir: Option<PathBuf>,
    /// This worker's name in job records (default: `<host>-<pid>`).
    pub id: Option<String>,
    /// How jobs are isolated: `auto` (bubblewrap where it works), `bwrap`, `none`.
    pub sandbox: String,
    /// Jobs may use the network (off: they see only their own loopback).
    pub network: bool,
    /// Memory a job may use (cgroups, where writable).
    pub memory_mb: u64,
    /// Processes a job may have at once (cgroups, where writable).
    pub pids: u64,
    /// CPUs a job may use (a cgroup CPU quota; with setrlimit, CPU-seconds
    /// of cpus x the job's time limit). Default: the machine's CPUs.
    pub cpus: f64,
    /// How memory, process and CPU limits are enforced: `auto` (cgroups
    /// where writable, else setrlimit), `cgroup` or `rlimit`.
    pub limit_by: String,
    /// Largest repository checkout (with its history) a clone may make.
    pub clone_limit_bytes: u64,
    /// Keep a bare copy of each repository (in `<data_dir>/cache/git`), and
    /// fetch into it instead of cloning again.
    pub git_cache: bool,
    /// Largest size of the git cache; the least recently used go first.
    pub git_cache_limit_bytes: u64,
    /// One npm cache (`<data_dir>/cache/npm`) for every job, instead of one
    /// per job.
    pub npm_cache: bool,
    /// Run the `start` script without npm's own start-up, as npm would run it
    /// (npm is still used when package.json has prestart or poststart).
    pub fast_start: bool,
    /// Bytes per second of a running job's output sent live to followers
    /// (`GET /api/jobs/{id}/logs?follow=true`); past it, live chunks are
    /// dropped (never the stored logs). 0 sends none.
    pub live_logs_rate_bytes: u64,
    /// The unprivileged user and group a root worker runs jobs as.
    pub job_uid: u32,
    pub job_gid: u32,
    /// How often a worker renews the lease on each job it runs.
    pub heartbeat_secs: u64,
    /// Heartbeats missed before a job counts as stalled and is queued again.
    pub lease_missed_heartbeats: u32,
    /// Tries a job gets when the infrastructure fails it (a stalled
    /// worker, an unreachable remote, a failed upload); its own failures
    /// are never retried.
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Built-in users (standalone mode).
    pub users: Vec<UserEntry>,
    /// Lifetime of the tokens the process signs.
    pub token_ttl_secs: u64,
}

/// A built-in user; `password` is plain text or an argon2 hash (`$argon2...`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserEntry")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

pub const DEFAULT_USER: &str = "demo";
pub const DEFAULT_PASSWORD: &str = "demo";

impl Config {
    pub fn defaults(mode: Mode) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("kumulus-data"),
            api: ApiConfig {
                body_limit_bytes: 1024 * 1024,
                rate_per_sec: 50,
                rate_burst: 200,
                max_connections: 1024,
                header_timeout_secs: 10,
                idle_timeout_secs: 60,
                body_timeout_secs: 30,
                shutdown_deadline_secs: 10,
                idempotency_ttl_secs: 86_400,
                live_logs_buffer_bytes: 256 * 1024,
            },
            worker: WorkerConfig {
                slots: 2,
                timeout_secs: 600,
                max_timeout_secs: 3600,
                log_limit_bytes: 10 * 1024 * 1024,
                output_limit_bytes: 1024 * 1024 * 1024,
                output_max_files: 1000,
                clone_timeout_secs: 120,
                shutdown_grace_secs: 10,
                allowed_schemes: vec!["https".into()],
                allow_local_repos: mode == Mode::Standalone,
                work_dir: None,
                id: None,
                sandbox: "auto".into(),
                network: false,
                memory_mb: 2048,
                pids: 512,
                // The machine's CPUs: no quota unless one is set (a quota
                // of one CPU slows even node's own multi-threaded start-up).
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
                limit_by: "auto".into(),
                clone_limit_bytes: 512 * 1024 * 1024,
                git_cache: true,
                git_cache_limit_bytes: 4 * 1024 * 1024 * 1024,
                npm_cache: true,
                fast_start: true,
                live_logs_rate_bytes: 64 * 1024,
                job_uid: 65534,
                job_gid: 65534,
                heartbeat_secs: 10,
                lease_missed_heartbeats: 3,
                max_attempts: 3,
            },
            auth: AuthConfig {
                users: match mode {
                    Mode::Standalone => vec![UserEntry {
                        username: DEFAULT_USER.into(),
                        password: DEFAULT_PASSWORD.into(),
                    }],
                    Mode::Production => Vec::new(),
                },
                token_ttl_secs: 3600,
            },
            autoscaler: AutoscalerConfig::default(),
            kafka: KafkaConfig::default(),
            mongo: MongoConfig::default(),
            s3: S3Config::default(),
            oidc: OidcConfig::default(),
            retention: RetentionConfig::default(),
            webhooks: WebhooksConfig::default(),
            file: None,
        }
    }

    /// Defaults, then `file`, then the environment.
    pub fn figment(mode: Mode, file: Option<&Path>) -> Figment {
        let mut fig = Figment::from(Serialized::defaults(Self::defaults(mode)));
        if let Some(file) = file {
            fig = fig.merge(Toml::file_exact(file));
        }
        fig.merge(
            Env::prefixed("KUMULUS_")
                .split("__")
                // Other KUMULUS_* variables (used by scripts) are not ours.
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase().replace("__", ".");
                    let top = key.split('.').next().unwrap_or("");
                    TOP_LEVEL_KEYS.contains(&top)
                }),
        )
    }

    /// Loads and validates the configuration.
    pub fn load(mode: Mode, file: Option<&Path>) -> Result<Self, ConfigError> {
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("no such file: {}", file.display()),
                ));
            }
        }
        let mut cfg = Self::from_figment(Self::figment(mode, file))?;
        cfg.file = file.map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf()));
        Ok(cfg)
    }

    pub fn from_figment(fig: Figment) -> Result<Self, ConfigError> {
        let cfg: Config = fig.extract().map_err(ConfigError::from_figment)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let w = &self.worker;
        let check = |ok: bool, key: &str, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::new(key, msg))
            }
        };
        check(w.slots >= 1, "worker.slots", "must be at least 1")?;
        check(
            self.retention
                .days
                .is_none_or(|d| d.is_finite() && d > 0.0 && d < 1e6),
            "retention.days",
            "must be a number of days above 0 (leave it out to keep jobs until deleted)",
        )?;
        for (v, key) in [
            (self.webhooks.timeout_secs, "webhooks.timeout_secs"),
            (self.webhooks.poll_ms, "webhooks.poll_ms"),
        ] {
            check(v >= 1, key, "must be at least 1")?;
        }
        check(
            self.retention.sweep_secs >= 1,
            "retention.sweep_secs",
            "must be at least 1",
        )?;
        let a = &self.api;
        check(
            a.max_connections >= 1,
            "api.max_connections",
            "must be at least 1",
        )?;
        for (v, key) in [
            (a.idempotency_ttl_secs, "api.idempotency_ttl_secs"),
            (a.header_timeout_secs, "api.header_timeout_secs"),
            (a.idle_timeout_secs, "api.idle_timeout_secs"),
            (a.body_timeout_secs, "api.body_timeout_secs"),
        ] {
            check(v >= 1, key, "must be at least 1")?;
        }
        check(
            w.job_uid != 0,
            "worker.job_uid",
            "must not be 0: jobs never run as root",
        )?;
        check(
            w.job_gid != 0,
            "worker.job_gid",
            "must not be 0: jobs never run as root",
        )?;
        check(
            w.heartbeat_secs >= 1,
            "worker.heartbeat_secs",
            "must be at least 1",
        )?;
        check(
            w.lease_missed_heartbeats >= 2,
            "worker.lease_missed_heartbeats",
            "must be at least 2",
        )?;
        check(
            (1..=20).contains(&w.max_attempts),
            "worker.max_attempts",
            "must be between 1 and 20",
        )?;
        check(w.slots <= 256, "worker.slots", "must be at most 256")?;
        check(
            w.timeout_secs >= 1,
            "worker.timeout_secs",
            "must be at least 1",
        )?;
        check(
            w.max_timeout_secs >= w.timeout_secs,
            "worker.max_timeout_secs",
            "must be at least worker.timeout_secs",
        )?;
        check(
            w.log_limit_bytes >= 1024,
            "worker.log_limit_bytes",
            "must be at least 1024",
        )?;
        check(
            matches!(w.sandbox.as_str(), "auto" | "bwrap" | "none"),
            "worker.sandbox",
            "must be auto, bwrap or none",
        )?;
        check(w.memory_mb >= 16, "worker.memory_mb", "must be at least 16")?;
        check(w.pids >= 8, "worker.pids", "must be at least 8")?;
        check(
            w.cpus >= 0.01 && w.cpus <= 1024.0,
            "worker.cpus",
            "must be from 0.01 to 1024",
        )?;
        check(
            matches!(w.limit_by.as_str(), "auto" | "cgroup" | "rlimit"),
            "worker.limit_by",
            "must be auto, cgroup or rlimit",
        )?;
        check(
            w.clone_limit_bytes >= 1024 * 1024,
            "worker.clone_limit_bytes",
            "must be at least 1 MiB (1048576)",
        )?;
        check(
            w.output_max_files >= 1,
            "worker.output_max_files",
            "must be at least 1",
        )?;
        check(
            w.clone_timeout_secs >= 1,
            "worker.clone_timeout_secs",
            "must be at least 1",
        )?;
        for s in &w.allowed_schemes {
            check(
                matches!(s.as_str(), "https" | "http" | "ssh" | "git"),
                "worker.allowed_schemes",
                "each must be one of https, http, ssh, git (local repositories: worker.allow_local_repos)",
            )?;
        }
        check(
            self.api.body_limit_bytes >= 1024,
            "api.body_limit_bytes",
            "must be at least 1024",
        )?;
        check(
            self.api.rate_per_sec >= 1,
            "api.rate_per_sec",
            "must be at least 1",
        )?;
        check(
            self.api.rate_burst >= 1,
            "api.rate_burst",
            "must be at least 1",
        )?;
        check(
            self.auth.token_ttl_secs >= 60,
            "auth.token_ttl_secs",
            "must be at least 60",
        )?;
        for u in &self.auth.users {
            check(
                !u.username.is_empty()
                    && u.username.len() <= 64
                    && u.username
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)),
                "auth.users",
                "usernames are 1 to 64 of A-Z a-z 0-9 . _ - @",
            )?;
            check(
                !u.password.is_empty(),
                "auth.users",
                "passwords must not be empty",
            )?;
        }
        let a = &self.autoscaler;
        check(
            a.period_secs >= 1,
            "autoscaler.period_secs",
            "must be at least 1",
        )?;
        check(
            matches!(a.policy.as_str(), "seed" | "lag" | "kumulus"),
            "autoscaler.policy",
            "must be seed, lag or kumulus",
        )?;
        check(
            matches!(
                a.driver.as_str(),
                "dry-run" | "command" | "kumori" | "process"
            ),
            "autoscaler.driver",
            "must be dry-run, command, kumori or process",
        )?;
        check(
            matches!(a.kumori_cli.as_str(), "kam" | "kumorictl"),
            "autoscaler.kumori_cli",
            "must be kam or kumorictl",
        )?;
        check(
            a.kumori_user.is_empty() || !a.kumori_password.is_empty(),
            "autoscaler.kumori_password",
            "kumori_user is set: the password is needed to log in (KUMULUS_AUTOSCALER__KUMORI_PASSWORD)",
        )?;
        check(
            matches!(a.process_on_stop.as_str(), "stop" | "leave"),
            "autoscaler.process_on_stop",
            "must be stop or leave",
        )?;
        check(
            a.driver != "command" || !a.command.is_empty(),
            "autoscaler.command",
            "the command driver needs a program",
        )?;
        check(
            a.max_workers >= 1 && a.min_workers <= a.max_workers,
            "autoscaler.max_workers",
            "must be at least 1 and at least autoscaler.min_workers",
        )?;
        check(
            a.slo_wait_secs > 0.0 && a.lag_threshold > 0.0,
            "autoscaler.slo_wait_secs",
            "slo_wait_secs and lag_threshold must be above 0",
        )?;
        check(
            a.startup_secs.is_valid()
                && a.cooldown_secs >= 0.0
                && a.stabilization_secs >= 0.0
                && a.rebalance_secs.is_valid()
                && a.idle_grace_secs >= 0.0,
            "autoscaler.startup_secs",
            "times must not be negative",
        )?;
        check(
            self.kafka.jobs_partitions >= 1,
            "kafka.jobs_partitions",
            "must be at least 1",
        )?;
        check(
            self.kafka.session_timeout_ms >= 1000,
            "kafka.session_timeout_ms",
            "must be at least 1000",
        )?;
        check(
            self.kafka.message_timeout_ms >= 100,
            "kafka.message_timeout_ms",
            "must be at least 100",
        )?;
        check(
            crate::placement::PLACEMENTS.contains(&self.kafka.placement.as_str()),
            "kafka.placement",
            "must be hash or least-backlog",
        )?;
        let mut names: Vec<&str> = self
            .auth
            .users
            .iter()
            .map(|u| u.username.as_str())
            .collect();
        names.sort_unstable();
        check(
            names.windows(2).all(|w| w[0] != w[1]),
            "auth.users",
            "usernames must be unique",
        )?;
        Ok(())
    }

    /// The limits a submission is checked against.
    pub fn limits(&self) -> Limits {
        Limits {
            default_timeout_secs: self.worker.timeout_secs,
            ceilings: self.ceilings(),
            max_timeout_secs: self.worker.max_timeout_secs,
            repos: self.repo_policy(),
        }
    }

    /// The worker's limits on a job (`worker.*`): what the frontend checks a
    /// job's own against, and what the worker applies.
    pub fn ceilings(&self) -> crate::submission::Ceilings {
        let w = &self.worker;
        crate::submission::Ceilings {
            memory_mb: w.memory_mb,
            cpus: w.cpus,
            pids: w.pids,
            log_limit_bytes: w.log_limit_bytes,
            output_limit_bytes: w.output_limit_bytes,
            output_max_files: w.output_max_files as u64,
        }
    }

    pub fn repo_policy(&self) -> RepoPolicy {
        RepoPolicy {
            allowed_schemes: self.worker.allowed_schemes.clone(),
            allow_local: self.worker.allow_local_repos,
        }
    }

    /// How long a job's lease lasts without a heartbeat.
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.worker.heartbeat_secs * u64::from(self.worker.lease_missed_heartbeats),
        )
    }

    /// How long work must wait on a queue partition whose committed offset
    /// stands still before the partition counts as unconsumed (stuck): a
    /// lease, and never sooner than the broker could have handed the
    /// partition to another member (a session timeout to notice a dead
    /// one, then a rebalance of up to two more). A rebalance under way is
    /// not a dead owner.
    pub fn unconsumed_after(&self) -> std::time::Duration {
        let rebalance =
            std::time::Duration::from_millis(u64::from(self.kafka.session_timeout_ms) * 3);
        self.lease().max(rebalance)
    }

    /// How long a job must have been placed on a partition where nothing
    /// waits before the reaper counts it lost by the queue: longer than
    /// work counts unconsumed, plus the time its message may take to be
    /// acknowledged (`kafka.message_timeout_ms`).
    pub fn lost_after(&self) -> std::time::Duration {
        self.unconsumed_after()
            + std::time::Duration::from_millis(u64::from(self.kafka.message_timeout_ms))
    }

    /// Makes the data and work folders absolute (against the current
    /// folder), so that everything started later (a job's sandbox binds
    /// them) sees the same folders.
    pub fn absolutize_paths(&mut self) -> std::io::Result<()> {
        self.data_dir = std::path::absolute(&self.data_dir)?;
        if let Some(w) = &self.worker.work_dir {
            self.worker.work_dir = Some(std::path::absolute(w)?);
        }
        Ok(())
    }

    pub fn work_dir(&self) -> PathBuf {
        self.worker
            .work_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("work"))
    }

    /// Where the worker keeps its git and npm caches.
    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }
}

const TOP_LEVEL_KEYS: [&str; 12] = [
    "listen",
    "data_dir",
    "api",
    "worker",
    "auth",
    "autoscaler",
    "kafka",
    "mongo",
    "s3",
    "oidc",
    "retention",
    "webhooks",
];

/// A configuration error: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    fn from_figment(err: figment::Error) -> Self {
        let mut key = err.path.join(".");
        let mut message = err.kind.to_string();
        if let figment::error::Kind::UnknownField(field, _) = &err.kind {
            // figment's path already ends with the unknown field.
            if !key.ends_with(field.as_str()) {
                key = if key.is_empty() {
                    field.clone()
                } else {
                    format!("{key}.{field}")
                };
            }
            message = "unknown key".into();
        }
        if key.is_empty() {
            key = "config".into();
        }
        if let Some(source) = err
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref().map(|s| format!("{} ({s})", m.name)))
        {
            message = format!("{message}, from {source}");
        }
        Self { key, message }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's own error type
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_valid() {
        Config::defaults(Mode::Standalone).validate().unwrap();
        Config::defaults(Mode::Production).validate().unwrap();
        assert!(Config::defaults(Mode::Standalone).worker.allow_local_repos);
        assert!(!Config::defaults(Mode::Production).worker.allow_local_repos);
    }

    #[test]
    fn work_counts_unconsumed_after_a_lease_and_never_within_a_rebalance() {
        let mut cfg = Config::defaults(Mode::Production);
        let secs = std::time::Duration::from_secs;
        // (heartbeat, missed heartbeats, session timeout ms) -> seconds
        for (beat, missed, session, want) in [
            (10, 3, 10_000, 30), // defaults: a lease and a rebalance alike
            (1, 3, 6_000, 18),   // short leases wait out the rebalance
            (20, 3, 6_000, 60),  // long leases win
            (1, 2, 1_000, 3),
        ] {
            cfg.worker.heartbeat_secs = beat;
            cfg.worker.lease_missed_heartbeats = missed;
            cfg.kafka.session_timeout_ms = session;
            assert_eq!(
                cfg.unconsumed_after(),
                secs(want),
                "{beat} {missed} {session}"
            );
        }
    }

    #[test]
    fn file_then_env_override_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "k.toml",
                "listen = \"127.0.0.1:9999\"\n[worker]\nslots = 3\ntimeout_secs = 30\n",
            )?;
            jail.set_env("KUMULUS_WORKER__SLOTS", "5");
            jail.set_env("KUMULUS_CLUSTER_DIR", "/not/ours");
            let cfg = Config::load(Mode::Standalone, Some(Path::new("k.toml"))).unwrap();
            assert_eq!(cfg.listen.port(), 9999);
            assert_eq!(cfg.worker.slots, 5);
            assert_eq!(cfg.worker.timeout_secs, 30);
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        Jail::expect_with(|jail| {
            jail.set_env("KUMULUS_WORKER__SLOTS", "many");
            let err = Config::load(Mode::Standalone, None).unwrap_err();
            assert_eq!(err.key, "worker.slots");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("KUMULUS_WORKER__SLOTS", "0");
            let err = Config::load(Mode::Standalone, None).unwrap_err();
            assert_eq!(err.key, "worker.slots");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("k.toml", "[worker]\nslotz = 3\n")?;
            let err = Config::load(Mode::Standalone, Some(Path::new("k.toml"))).unwrap_err();
            assert_eq!(err.key, "worker.slotz");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file(
                "k.toml",
                "[worker]\ntimeout_secs = 100\nmax_timeout_secs = 10\n",
            )?;
            let err = Config::load(Mode::Standalone, Some(Path::new("k.toml"))).unwrap_err();
            assert_eq!(err.key, "worker.max_timeout_secs");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("KUMULUS_KAFKA__PLACEMENT", "random");
            let err = Config::load(Mode::Standalone, None).unwrap_err();
            assert_eq!(err.key, "kafka.placement");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("KUMULUS_KAFKA__PLACEMENT", "least-backlog");
            let cfg = Config::load(Mode::Standalone, None).unwrap();
            assert_eq!(cfg.kafka.placement, "least-backlog");
            Ok(())
        });
    }

    #[test]
    fn debug_never_prints_passwords() {
        let cfg = Config::defaults(Mode::Standalone);
        assert!(!format!("{cfg:?}").contains("password: \"demo\""));
    }
}
