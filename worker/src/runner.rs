//! Running one job from start to end, as the seed's contract says: clone the
//! repository, write config.json, run the `start` script with the job's
//! arguments, capture stdout and stderr, collect `output/`. This is the step;
//! the loop around it (claiming, events, uploads) lives in [`crate::slot`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use kumulus_core::job::{JobState, QueuedJob};
use kumulus_core::ports::is_safe_file_name;
use kumulus_core::submission::RepoPolicy;

use crate::git::{self, CloneError};
use crate::limits::{Ending, Enforcer, Limits};
use crate::live::Tap;
use crate::process::{self, Exit};

/// What a job needs from the worker's configuration.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Parent of the jobs' work folders.
    pub work_dir: PathBuf,
    pub repos: RepoPolicy,
    /// The worker's limits; a job may lower them.
    pub limits: Limits,
    /// How memory, process and CPU limits are enforced.
    pub enforcer: Enforcer,
    /// Time and size limits of a clone.
    pub clone: git::CloneLimits,
    /// The cache of repository copies, if on.
    pub git_cache: Option<std::sync::Arc<git::GitCache>>,
    /// Where each user's npm cache lives, if shared between their jobs.
    pub npm_cache: Option<PathBuf>,
    pub sandbox: crate::sandbox::Sandbox,
    /// Run the `start` script without npm's start-up (see [`fast_command`]).
    pub fast_start: bool,
    /// Where running jobs' output goes live, and at what rate (0: nowhere).
    pub live_logs: Option<crate::live::LiveLogs>,
    /// Who jobs run as, where the worker is root.
    pub job_user: Option<crate::identity::JobUser>,
}

/// The folder under the work root that holds the users' npm caches.
pub const NPM_CACHES: &str = ".npm-cache";

/// How a job ended, and the files it left (name, where they are now).
#[derive(Debug)]
pub struct RunResult {
    pub state: JobState,
    /// The infrastructure failed the job (not the job itself): worth another attempt.
    pub infrastructure: bool,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub elapsed: Duration,
    pub files: Vec<(String, PathBuf)>,
}

/// A job's work folder; removed when dropped. While it exists, the lock
/// file beside it (`<folder>.lock`) is held, so that a worker starting on
/// the same work root tells a live job's folder from an interrupted one's.
pub struct WorkDir {
    path: PathBuf,
    lock: Option<(PathBuf, std::fs::File)>,
}

impl WorkDir {
    /// Takes the lock of a new folder `path` (the folder itself comes later).
    fn claim(path: PathBuf) -> Self {
        let lock_path = lock_of(&path);
        let lock = std::fs::File::create(&lock_path)
            .and_then(|f| f.try_lock().map_err(std::io::Error::other).map(|()| f));
        match lock {
            Ok(f) => Self {
                path,
                lock: Some((lock_path, f)),
            },
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "could not lock a work folder");
                Self { path, lock: None }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lock_of(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    dir.with_file_name(name)
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.path.display(), error = %e, "could not remove work folder");
            }
        }
        if let Some((path, _file)) = self.lock.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes what interrupted runs left in the work root: their folders
/// (whose lock nobody holds any more) and whatever still runs in their
/// cgroups. Folders of jobs that run now, in another worker sharing the
/// root, are left alone.
pub fn clean_interrupted(settings: &RunSettings) {
    let Ok(entries) = std::fs::read_dir(&settings.work_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || name.ends_with(".lock") || !path.is_dir() {
            continue;
        }
        let lock_path = lock_of(&path);
        let Ok(lock) = std::fs::File::create(&lock_path) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // a live job's
        }
        settings.enforcer.remove_stale(&name);
        tracing::info!(dir = %path.display(), "removing the work folder of an interrupted job");
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&lock_path);
    }
}

/// Runs `job`. The returned files live in the returned work folder, which
/// is removed when it is dropped: upload them first.
pub async fn run_job(
    job: &QueuedJob,
    settings: &RunSettings,
    cancel: &CancellationToken,
) -> (RunResult, WorkDir) {
    let started = Instant::now();
    // One folder per run: a job delivered twice (a rebalance moved its
    // partition while it ran) must not share a folder with its twin.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let dir = WorkDir::claim(settings.work_dir.join(format!("{}-{}", job.id, &run[..8])));
    let result = match prepare_and_run(job, settings, dir.path(), cancel).await {
        Ok(mut r) => {
            r.elapsed = started.elapsed();
            r
        }
        Err(failure) => RunResult {
            state: failure.state,
            infrastructure: failure.infrastructure,
            exit_code: None,
            error: Some(failure.error),
            elapsed: started.elapsed(),
            files: Vec::new(),
        },
    };
    (result, dir)
}

/// A job that ended before its script could run.
struct Failure {
    state: JobState,
    error: String,
    infrastructure: bool,
}

fn failed(error: impl Into<String>) -> Failure {
    Failure {
        state: JobState::Failed,
        error: error.into(),
        infrastructure: false,
    }
}

fn io_failure(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| failed(io_message(what, &e))
}

/// What went wrong, in words; a full disk says so.
fn io_message(what: &str, e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        format!("the worker's disk is full: it could not {what} ({e})")
    } else {
        format!("the worker could not {what}: {e}")
    }
}

async fn prepare_and_run(
    job: &QueuedJob,
    settings: &RunSettings,
    dir: &Path,
    cancel: &CancellationToken,
) -> Result<RunResult, Failure> {
    let _ = tokio::fs::remove_dir_all(dir).await;
    let home = dir.join("home");
    let repo = dir.join("repo");
    tokio::fs::create_dir_all(&home)
        .await
        .map_err(io_failure("make the work folder"))?;

    git::checkout(
        &job.url,
        &settings.repos,
        &repo,
        &home,
        &settings.clone,
        // A local repository is cloned as fast as a copy would be.
        settings
            .git_cache
            .as_deref()
            .filter(|_| git::is_remote(&job.url, &settings.repos)),
        cancel,
    )
    .await
    .map_err(|e| match e {
        CloneError::Cancelled => Failure {
            state: JobState::Cancelled,
            error: "cancelled".into(),
            infrastructure: false,
        },
        other => Failure {
            infrastructure: other.is_unreachable(),
            ..failed(other.to_string())
        },
    })?;

    let package = check_start_script(&repo).await?;
    if let Some(config) = &job.config {
        tokio::fs::write(repo.join("config.json"), config)
            .await
            .map_err(io_failure("write config.json"))?;
    }
    tokio::fs::create_dir_all(repo.join("output"))
        .await
        .map_err(io_failure("make the output folder"))?;
    let npm_cache = npm_cache(settings, &job.owner, &home)?;
    if let Some(user) = settings.job_user {
        // The job's own folders become its user's; the logs beside them
        // stay the worker's, out of the job's reach.
        for dir in [&repo, &home] {
            user.own_tree(dir)
                .map_err(io_failure("hand the job's folders to worker.job_uid"))?;
        }
        std::os::unix::fs::lchown(&npm_cache, Some(user.uid), Some(user.gid))
            .map_err(io_failure("hand the npm cache to worker.job_uid"))?;
    }

    let stdout = dir.join("stdout.log");
    let stderr = dir.join("stderr.log");
    let limits = settings.limits.lowered_by(&job.limits);
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("job");
    let confinement = settings
        .enforcer
        .confine(name, &limits, job.timeout_secs)
        .map_err(io_failure("set the job's limits"))?;
    let places = Places {
        repo: &repo,
        home: &home,
        npm_cache,
    };
    let live = settings
        .live_logs
        .as_ref()
        .map(|l| Tap::start(l.bus.clone(), job.id, job.attempt, l.rate));
    let exit = process::run(
        if settings.fast_start && !package.has_hooks {
            fast_command(job, &package, &places, &settings.sandbox)
        } else {
            npm_command(job, &places, &settings.sandbox)
        },
        &stdout,
        &stderr,
        limits.log_limit_bytes,
        Duration::from_secs(job.timeout_secs),
        cancel,
        process::Confine {
            limits: Some(&confinement),
            user: settings.job_user,
            live: live.as_ref(),
        },
    )
    .await
    .map_err(io_failure("run the job"))?;

    // The signal that ended the script's first process, if one did.
    let signal = match exit {
        Exit::Exited(status) => std::os::unix::process::ExitStatusExt::signal(&status),
        _ => None,
    };
    let (mut state, exit_code, mut error) = match exit {
        Exit::Exited(status) => match (status.code(), signal) {
            (Some(0), _) => (JobState::Succeeded, Some(0), None),
            (Some(code), _) => (
                JobState::Failed,
                Some(code),
                Some(format!("the start script exited with code {code}")),
            ),
            (None, Some(sig)) => (
                JobState::Failed,
                Some(128 + sig),
                Some(format!("the start script was killed by signal {sig}")),
            ),
            (None, None) => (
                JobState::Failed,
                None,
                Some("the start script ended abnormally".into()),
            ),
        },
        Exit::TimedOut => (
            JobState::TimedOut,
            None,
            Some(format!(
                "the job ran longer than its time limit of {} s",
                job.timeout_secs
            )),
        ),
        Exit::Cancelled => (JobState::Cancelled, None, Some("cancelled".into())),
    };

    let ending = Ending {
        signal,
        exit_code,
        timed_out: state == JobState::TimedOut,
        stderr: &stderr,
    };
    if let Some(limit) = confinement.verdict(&ending) {
        match state {
            JobState::Cancelled => {}
            // Still a time-out, with the reason it ran so long.
            JobState::TimedOut => error = Some(limit),
            _ => {
                state = JobState::Failed;
                error = Some(limit);
            }
        }
    }
    drop(confinement);
    let mut files = vec![
        ("stdout.log".to_string(), stdout),
        ("stderr.log".to_string(), stderr),
    ];
    let mut output = Output::default();
    collect_output(&repo.join("output"), "output", &limits, &mut output);
    if let Some(limit) = output.over {
        // Over a limit: the job fails, and only its logs are kept.
        state = JobState::Failed;
        error = Some(limit);
    } else {
        files.extend(output.files);
    }
    Ok(RunResult {
        state,
        infrastructure: false,
        exit_code,
        error,
        elapsed: Duration::ZERO,
        files,
    })
}

/// Where a job's command runs and what it may write.
struct Places<'a> {
    repo: &'a Path,
    home: &'a Path,
    /// The npm cache: the owner's shared one, or one in the job's home.
    npm_cache: PathBuf,
}

impl Places<'_> {
    /// The folders the job may write: its repository, its home, and its
    /// owner's npm cache (never the folder with its logs).
    fn writable(&self) -> Vec<&Path> {
        if self.npm_cache.starts_with(self.home) {
            vec![self.repo, self.home]
        } else {
            vec![self.repo, self.home, &self.npm_cache]
        }
    }
}

/// The npm cache of `owner`'s jobs (shared between them, never with other
/// users' jobs), or a fresh one in the job's home.
fn npm_cache(settings: &RunSettings, owner: &str, home: &Path) -> Result<PathBuf, Failure> {
    let dir = match &settings.npm_cache {
        None => home.join(".npm"),
        Some(base) => {
            use sha2::Digest;
            let name = hex::encode(sha2::Sha256::digest(owner.as_bytes()));
            base.join(&name[..32])
        }
    };
    std::fs::create_dir_all(&dir).map_err(io_failure("make the npm cache"))?;
    Ok(dir)
}

/// What the fast path needs from package.json.
struct Package {
    name: String,
    version: String,
    start: String,
    /// `prestart` or `poststart` exist: only npm runs those, so no fast path.
    has_hooks: bool,
}

async fn check_start_script(repo: &Path) -> Result<Package, Failure> {
    let text = match tokio::fs::read(repo.join("package.json")).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(failed("the repository has no package.json at its root"))
        }
        Err(e) => return Err(failed(format!("cannot read package.json: {e}"))),
    };
    let json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| failed(format!("package.json is not valid JSON: {e}")))?;
    let scripts = json.get("scripts");
    let start = match scripts.and_then(|s| s.get("start")) {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err(failed("package.json has no `start` script")),
    };
    let text_of = |key: &str| {
        json.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    Ok(Package {
        name: text_of("name"),
        version: text_of("version"),
        start,
        has_hooks: scripts
            .map(|s| s.get("prestart").is_some() || s.get("poststart").is_some())
            .unwrap_or(false),
    })
}

/// The `start` script without npm's own start-up, with what npm gives a
/// script: `sh -c '<script> "$@"'` with the arguments as positional
/// parameters (so the script sees the same words `npm run start -- <args>`
/// would append, and no shell parses them), `node_modules/.bin` first on
/// PATH, and the `npm_*` variables scripts read.
fn fast_command(
    job: &QueuedJob,
    package: &Package,
    places: &Places,
    sandbox: &crate::sandbox::Sandbox,
) -> Command {
    let (repo, home) = (places.repo, places.home);
    let mut args = vec![
        "-c".to_string(),
        format!("{} \"$@\"", package.start),
        "sh".to_string(),
    ];
    args.extend(job.args.iter().cloned());
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let bin = repo.join("node_modules").join(".bin");
    let env = [
        ("PATH", format!("{}:{path}", bin.display())),
        ("HOME", home.display().to_string()),
        ("LANG", "C.UTF-8".to_string()),
        ("INIT_CWD", repo.display().to_string()),
        ("npm_lifecycle_event", "start".to_string()),
        ("npm_lifecycle_script", package.start.clone()),
        ("npm_package_name", package.name.clone()),
        ("npm_package_version", package.version.clone()),
        (
            "npm_package_json",
            repo.join("package.json").display().to_string(),
        ),
        ("npm_command", "run-script".to_string()),
        ("npm_config_cache", places.npm_cache.display().to_string()),
    ];
    sandbox.command("sh", &args, repo, &places.writable(), &env)
}

/// `npm run start -- <args>`: each argument its own argv entry, no shell of
/// ours in between (npm quotes them for the script's shell), in the sandbox.
/// The job sees none of the worker's environment but PATH.
fn npm_command(job: &QueuedJob, places: &Places, sandbox: &crate::sandbox::Sandbox) -> Command {
    let mut args: Vec<String> = ["run", "--silent", "start", "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(job.args.iter().cloned());
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let env = [
        ("PATH", path),
        ("HOME", places.home.display().to_string()),
        ("LANG", "C.UTF-8".to_string()),
        ("npm_config_cache", places.npm_cache.display().to_string()),
        ("npm_config_update_notifier", "false".to_string()),
        ("npm_config_fund", "false".to_string()),
        ("npm_config_audit", "false".to_string()),
    ];
    sandbox.command("npm", &args, places.repo, &places.writable(), &env)
}

/// The files a job left under output/, and the limit it broke, if any.
#[derive(Default)]
struct Output {
    files: Vec<(String, PathBuf)>,
    bytes: u64,
    over: Option<String>,
}

/// Every regular file under `dir`, named `<prefix>/<relative path>`, within
/// the output limits (the walk stops at the first file past them).
/// Symlinks are never followed: a link to /etc/passwd is not a result.
fn collect_output(dir: &Path, prefix: &str, limits: &Limits, out: &mut Output) {
    if out.over.is_some() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let Some(name) = entry.file_name().to_str().map(|n| format!("{prefix}/{n}")) else {
            tracing::warn!(file = ?entry.path(), "skipping an output file whose name is not UTF-8");
            continue;
        };
        if !is_safe_file_name(&name) {
            continue;
        }
        if kind.is_dir() {
            collect_output(&entry.path(), &name, limits, out);
        } else if kind.is_file() {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.bytes += size;
            out.files.push((name, entry.path()));
            if out.files.len() > limits.output_max_files {
                out.over = Some(format!(
                    "the job left more than {} files under output/ (worker.output_max_files)",
                    limits.output_max_files
                ));
            } else if out.bytes > limits.output_limit_bytes {
                out.over = Some(format!(
                    "the job left more than {} bytes under output/ (worker.output_limit_bytes)",
                    limits.output_limit_bytes
                ));
            }
        }
        if out.over.is_some() {
            return;
        }
    }
}
