//! Cloning a stranger's repository without trusting it: the URL is checked
//! again here, passed after `--`, only the allowed transports are enabled,
//! no hooks, no system or user git config, no prompts, a time limit and a
//! size limit.
//!
//! With the cache on, each repository is cloned once into a bare copy in
//! the worker's cache folder (named by a hash of its full URL, credentials
//! included, so different credentials never share a copy), fetched into on
//! later jobs, and each job gets its own shallow clone of that copy. The
//! cache folder sits in the data folder, which jobs never see, and jobs get
//! copies, never hard links, so no job can change what the next one gets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use kumulus_core::redact::{redact_text, redact_url};
use kumulus_core::submission::{check_repo_url, RepoLocation, RepoPolicy};

use crate::process::{self, Exit};

/// Why a clone failed, in words fit for the job's `error` (credentials redacted).
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("repository URL refused: {0}")]
    Refused(String),
    #[error("git clone failed: {0}")]
    Failed(String),
    #[error("git clone took longer than {0} s")]
    TimedOut(u64),
    #[error("the repository is larger than {0} bytes (worker.clone_limit_bytes)")]
    TooLarge(u64),
    #[error("cancelled while cloning")]
    Cancelled,
}

impl CloneError {
    /// Whether the remote could not be reached: the infrastructure's
    /// failure, worth another attempt (a wrong URL or a refused one is not).
    pub fn is_unreachable(&self) -> bool {
        let CloneError::Failed(text) = self else {
            return false;
        };
        let text = text.to_ascii_lowercase();
        [
            "could not resolve host",
            "couldn't resolve host",
            "connection refused",
            "connection timed out",
            "failed to connect",
            "network is unreachable",
            "no route to host",
            "connection reset",
            "the remote end hung up unexpectedly",
            "unable to connect",
        ]
        .iter()
        .any(|p| text.contains(p))
    }
}

/// Whether `url` names a repository elsewhere (not a local path or file://
/// URL): only those are worth caching.
pub fn is_remote(url: &str, policy: &RepoPolicy) -> bool {
    matches!(check_repo_url(url, policy), Ok(RepoLocation::Remote { .. }))
}

/// What every clone is held to.
#[derive(Debug, Clone)]
pub struct CloneLimits {
    pub timeout: Duration,
    /// Largest size of what a clone writes (checkout and history).
    pub max_bytes: u64,
}

/// Gets a shallow checkout of `url` into `dest`: from the cache when there
/// is one, else straight from the URL. `scratch` holds git's home and logs.
pub async fn checkout(
    url: &str,
    policy: &RepoPolicy,
    dest: &Path,
    scratch: &Path,
    limits: &CloneLimits,
    cache: Option<&GitCache>,
    cancel: &CancellationToken,
) -> Result<(), CloneError> {
    let location = check_repo_url(url, policy).map_err(CloneError::Refused)?;
    let local = matches!(location, RepoLocation::Local);
    let Some(cache) = cache else {
        let clone = if local {
            // A plain copy of the objects is the quickest clone of a local
            // repository (copies, not hard links: the job must not be able
            // to change the user's repository through them).
            let path = url.strip_prefix("file://").unwrap_or(url);
            Git::new(policy, scratch).clone_args(path, dest, Clone::LocalCopy)
        } else {
            Git::new(policy, scratch).clone_args(url, dest, Clone::Shallow)
        };
        run(clone, url, dest, scratch, limits, cancel).await?;
        if redact_url(url) != url {
            // The job never sees the credentials in its own .git/config.
            set_origin(url, policy, dest, scratch, limits, cancel).await?;
        }
        return Ok(());
    };
    // A local path becomes a file:// URL so that --depth applies to it too.
    let source = if local && url.starts_with('/') {
        format!("file://{url}")
    } else {
        url.to_string()
    };
    let source = source.as_str();
    let entry = cache.entry(url);
    let _lock = cache.lock(&entry).await?;
    let fresh = !entry.join("HEAD").exists();
    let current = !fresh && {
        let fetch = Git::new(policy, scratch).fetch_args(&entry);
        match run(fetch, url, &entry, scratch, limits, cancel).await {
            Ok(()) => true,
            Err(CloneError::Cancelled) => return Err(CloneError::Cancelled),
            Err(_) => false,
        }
    };
    if !current {
        // A copy that cannot be brought up to date is cloned again, so a
        // job never runs stale code.
        let _ = std::fs::remove_dir_all(&entry);
        let clone = Git::new(policy, scratch).clone_args(source, &entry, Clone::Bare);
        if let Err(e) = run(clone, url, &entry, scratch, limits, cancel).await {
            let _ = std::fs::remove_dir_all(&entry);
            return Err(e);
        }
    }
    cache.touch(&entry);
    let local = format!("file://{}", entry.display());
    let mut git = Git::new(policy, scratch);
    git.cmd.arg("-c").arg("protocol.file.allow=always");
    let clone = git.clone_args(&local, dest, Clone::Shallow);
    run(clone, url, dest, scratch, limits, cancel).await?;
    // The job's own clone names the repository the user gave, not the cache.
    set_origin(url, policy, dest, scratch, limits, cancel).await?;
    // A new copy, or fetches that grew the copies: keep within the limit.
    if fresh || cache.due_for_eviction() {
        cache.evict();
    }
    Ok(())
}

/// Makes a clone's `origin` the repository's URL without its credentials.
async fn set_origin(
    url: &str,
    policy: &RepoPolicy,
    dest: &Path,
    scratch: &Path,
    limits: &CloneLimits,
    cancel: &CancellationToken,
) -> Result<(), CloneError> {
    let mut git = Git::new(policy, scratch);
    git.cmd
        .arg("-C")
        .arg(dest)
        .args(["config", "remote.origin.url"])
        .arg(redact_url(url));
    run(git.cmd, url, dest, scratch, limits, cancel).await
}

/// The kinds of clone.
enum Clone {
    /// The last commit of the default branch.
    Shallow,
    /// The same, bare (a cache copy).
    Bare,
    /// A local repository's objects, copied.
    LocalCopy,
}

/// A git command with nothing of the machine's or the repository's
/// configuration that could run code.
struct Git {
    cmd: Command,
}

impl Git {
    fn new(policy: &RepoPolicy, scratch: &Path) -> Self {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", scratch)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS", "/bin/false")
            .env("GIT_LFS_SKIP_SMUDGE", "1")
            .arg("-c")
            .arg("protocol.allow=never")
            .arg("-c")
            .arg("core.hooksPath=/dev/null")
            .arg("-c")
            .arg("core.fsmonitor=false")
            .arg("-c")
            .arg("credential.helper=");
        for scheme in &policy.allowed_schemes {
            cmd.arg("-c").arg(format!("protocol.{scheme}.allow=always"));
        }
        if policy.allow_local {
            cmd.arg("-c").arg("protocol.file.allow=always");
        }
        Self { cmd }
    }

    fn clone_args(mut self, source: &str, dest: &Path, kind: Clone) -> Command {
        self.cmd
            .args(["clone", "--quiet", "--single-branch", "--no-tags"]);
        self.cmd.arg("--recurse-submodules=no");
        match kind {
            Clone::Shallow => self.cmd.args(["--depth", "1"]),
            Clone::Bare => self.cmd.args(["--depth", "1", "--bare"]),
            Clone::LocalCopy => self.cmd.args(["--local", "--no-hardlinks"]),
        };
        self.cmd.arg("--").arg(source).arg(dest);
        self.cmd
    }

    /// Brings a cached bare copy's branch (the one its HEAD names) up to
    /// date with the remote's default branch.
    fn fetch_args(mut self, entry: &Path) -> Command {
        let head = std::fs::read_to_string(entry.join("HEAD")).unwrap_or_default();
        let branch = head
            .strip_prefix("ref: ")
            .map(str::trim)
            .filter(|r| r.starts_with("refs/heads/"))
            .unwrap_or("refs/heads/main");
        self.cmd.arg("--git-dir").arg(entry);
        self.cmd
            .args(["fetch", "--quiet", "--depth", "1", "--no-tags"])
            .args(["--recurse-submodules=no", "origin"])
            .arg(format!("+HEAD:{branch}"));
        self.cmd
    }
}

/// Runs a git command within the time and size limits; `grows` is the
/// folder it writes, watched for size.
async fn run(
    cmd: Command,
    url: &str,
    grows: &Path,
    scratch: &Path,
    limits: &CloneLimits,
    cancel: &CancellationToken,
) -> Result<(), CloneError> {
    let out = scratch.join("clone.out");
    let err = scratch.join("clone.err");
    let stop = cancel.child_token();
    let too_large = CancellationToken::new();
    let watch = tokio::spawn(watch_size(
        grows.to_path_buf(),
        limits.max_bytes,
        stop.clone(),
        too_large.clone(),
    ));
    let exit = process::run(
        cmd,
        &out,
        &err,
        64 * 1024,
        limits.timeout,
        &stop,
        process::Confine::default(),
    )
    .await;
    watch.abort();
    let exit = exit.map_err(|e| CloneError::Failed(format!("could not start git: {e}")))?;
    // The watcher looks every 100 ms; a fast clone is measured at the end.
    if too_large.is_cancelled()
        || (matches!(exit, Exit::Exited(_)) && folder_size(grows) > limits.max_bytes)
    {
        return Err(CloneError::TooLarge(limits.max_bytes));
    }
    match exit {
        Exit::Exited(status) if status.success() => Ok(()),
        Exit::Exited(_) => {
            let text = std::fs::read_to_string(&err).unwrap_or_default();
            let reason = text
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or("git exited with an error")
                .to_string();
            // git echoes the URL it was given; never let its credentials through.
            let reason = redact_text(&reason, url).replace(url, &redact_url(url));
            Err(CloneError::Failed(reason))
        }
        Exit::TimedOut => Err(CloneError::TimedOut(limits.timeout.as_secs())),
        Exit::Cancelled => Err(CloneError::Cancelled),
    }
}

/// Stops the clone (through `stop`, marking `too_large`) once `dir` holds
/// more than `max_bytes`.
async fn watch_size(
    dir: PathBuf,
    max_bytes: u64,
    stop: CancellationToken,
    too_large: CancellationToken,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let d = dir.clone();
        let size = tokio::task::spawn_blocking(move || folder_size(&d))
            .await
            .unwrap_or(0);
        if size > max_bytes {
            too_large.cancel();
            stop.cancel();
            return;
        }
    }
}

/// Bytes in the regular files under `dir` (symlinks not followed).
pub fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// The worker's cache of bare repository copies.
#[derive(Debug)]
pub struct GitCache {
    dir: PathBuf,
    limit_bytes: u64,
    /// One lock per copy among this process's slots; a file lock keeps
    /// other worker processes sharing the folder out too.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// When the cache was last measured.
    measured: Mutex<Option<std::time::Instant>>,
}

/// How often fetches make the cache measure itself.
const EVICTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Holds a cached copy for one job's clone.
pub struct EntryLock {
    _file: std::fs::File,
    _slot: tokio::sync::OwnedMutexGuard<()>,
}

impl GitCache {
    pub fn new(dir: PathBuf, limit_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            limit_bytes,
            locks: Mutex::default(),
            measured: Mutex::default(),
        })
    }

    /// The folder of `url`'s copy.
    pub fn entry(&self, url: &str) -> PathBuf {
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(url.as_bytes()));
        self.dir.join(format!("{hash}.git"))
    }

    async fn lock(&self, entry: &Path) -> Result<EntryLock, CloneError> {
        let slot = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(entry.to_path_buf()).or_default().clone()
        };
        let slot = slot.lock_owned().await;
        let path = entry.with_extension("lock");
        let file = tokio::task::spawn_blocking(move || {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)?;
            f.lock()?;
            Ok::<_, std::io::Error>(f)
        })
        .await
        .map_err(|e| CloneError::Failed(format!("git cache: {e}")))?
        .map_err(|e| CloneError::Failed(format!("git cache: {e}")))?;
        Ok(EntryLock {
            _file: file,
            _slot: slot,
        })
    }

    /// Marks a copy as just used (its lock file's time).
    fn touch(&self, entry: &Path) {
        let _ = std::fs::File::options()
            .write(true)
            .open(entry.with_extension("lock"))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }

    /// Whether it is time to measure the cache again.
    fn due_for_eviction(&self) -> bool {
        let last = *self.measured.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|t| t.elapsed() >= EVICTION_INTERVAL)
    }

    /// Removes the least recently used copies until the cache fits its
    /// limit; copies in use (locked) stay.
    pub fn evict(&self) {
        *self.measured.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut copies: Vec<(std::time::SystemTime, PathBuf, u64)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "git"))
            .map(|p| {
                let used = std::fs::metadata(p.with_extension("lock"))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                let size = folder_size(&p);
                (used, p, size)
            })
            .collect();
        let mut total: u64 = copies.iter().map(|c| c.2).sum();
        copies.sort();
        for (_, path, size) in copies {
            if total <= self.limit_bytes {
                break;
            }
            let lock = path.with_extension("lock");
            let Ok(file) = std::fs::OpenOptions::new().write(true).open(&lock) else {
                continue;
            };
            if file.try_lock().is_ok() {
                let _ = std::fs::remove_dir_all(&path);
                let _ = std::fs::remove_file(&lock);
                total = total.saturating_sub(size);
                tracing::info!(copy = %path.display(), "git cache: removed the least recently used copy");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits `package.json` with `content` in `dir` (made a repository if it is not one).
    fn repo(dir: &Path, content: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("package.json"), content).unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .current_dir(dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        if !dir.join(".git").exists() {
            git(&["init", "-q"]);
        }
        git(&["add", "."]);
        git(&["commit", "-qm", "c"]);
    }

    fn policy() -> RepoPolicy {
        RepoPolicy {
            allowed_schemes: vec!["https".into()],
            allow_local: true,
        }
    }

    fn limits(max_bytes: u64) -> CloneLimits {
        CloneLimits {
            timeout: Duration::from_secs(30),
            max_bytes,
        }
    }

    /// A folder for the test's repositories and clones, and git's scratch.
    struct Fixture {
        tmp: tempfile::TempDir,
        cancel: CancellationToken,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(tmp.path().join("scratch")).unwrap();
            Self {
                tmp,
                cancel: CancellationToken::new(),
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.tmp.path().join(name)
        }

        /// Checks `url` out into the folder `dest`, within `max_bytes`.
        async fn checkout(
            &self,
            url: &str,
            dest: &str,
            max_bytes: u64,
            cache: Option<&GitCache>,
        ) -> Result<PathBuf, CloneError> {
            let dest = self.path(dest);
            let _ = std::fs::remove_dir_all(&dest);
            checkout(
                url,
                &policy(),
                &dest,
                &self.path("scratch"),
                &limits(max_bytes),
                cache,
                &self.cancel,
            )
            .await
            .map(|()| dest)
        }
    }

    const ANY_SIZE: u64 = 1 << 30;

    #[tokio::test]
    async fn the_cache_clones_once_then_fetches_new_commits() {
        let f = Fixture::new();
        let upstream = f.path("upstream");
        repo(&upstream, "{\"v\": 1}");
        let url = upstream.display().to_string();
        let cache = GitCache::new(f.path("cache"), ANY_SIZE).unwrap();

        let first = f
            .checkout(&url, "job1", ANY_SIZE, Some(&cache))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(first.join("package.json")).unwrap(),
            "{\"v\": 1}"
        );
        assert!(cache.entry(&url).join("HEAD").exists(), "cached");

        // A new commit upstream reaches the next job through the cache.
        repo(&upstream, "{\"v\": 2}");
        let second = f
            .checkout(&url, "job2", ANY_SIZE, Some(&cache))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(second.join("package.json")).unwrap(),
            "{\"v\": 2}"
        );
        // The job's clone points at the repository, not at the cache.
        let config = std::fs::read_to_string(second.join(".git/config")).unwrap();
        assert!(
            config.contains(&url) && !config.contains("cache"),
            "{config}"
        );

        // Upstream gone: the job fails, it does not run the stale copy.
        std::fs::remove_dir_all(&upstream).unwrap();
        let err = f
            .checkout(&url, "job3", ANY_SIZE, Some(&cache))
            .await
            .unwrap_err();
        assert!(matches!(err, CloneError::Failed(_)), "{err}");
        assert!(!cache.entry(&url).exists());
    }

    #[tokio::test]
    async fn a_clones_origin_never_holds_credentials() {
        let f = Fixture::new();
        let upstream = f.path("upstream");
        repo(&upstream, "{}");
        let url = upstream.display().to_string();
        let dest = f.checkout(&url, "job", ANY_SIZE, None).await.unwrap();
        let with_token = "https://alice:s3cr3t@example.com/private/repo.git";
        let scratch = f.path("scratch");
        set_origin(
            with_token,
            &policy(),
            &dest,
            &scratch,
            &limits(ANY_SIZE),
            &f.cancel,
        )
        .await
        .unwrap();
        let config = std::fs::read_to_string(dest.join(".git/config")).unwrap();
        assert!(!config.contains("s3cr3t"), "{config}");
        assert!(config.contains("example.com/private/repo.git"), "{config}");
    }

    #[tokio::test]
    async fn a_clone_past_the_size_limit_stops() {
        let f = Fixture::new();
        let upstream = f.path("big");
        std::fs::create_dir_all(&upstream).unwrap();
        // 4 MiB that git cannot compress.
        let noise: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(upstream.join("blob.bin"), noise).unwrap();
        repo(&upstream, "{}");
        let url = upstream.display().to_string();
        let cache = GitCache::new(f.path("cache"), ANY_SIZE).unwrap();
        for cache in [None, Some(&cache)] {
            let err = f.checkout(&url, "dest", 1 << 20, cache).await.unwrap_err();
            assert!(matches!(err, CloneError::TooLarge(_)), "{err}");
            assert!(err.to_string().contains("worker.clone_limit_bytes"));
        }
    }

    #[tokio::test]
    async fn the_least_recently_used_copies_go_first() {
        let f = Fixture::new();
        // Room for about one copy.
        let cache = GitCache::new(f.path("cache"), 1).unwrap();
        let mut urls = Vec::new();
        for i in 0..3 {
            let upstream = f.path(&format!("r{i}"));
            repo(&upstream, &format!("{{\"r\": {i}}}"));
            let url = upstream.display().to_string();
            f.checkout(&url, &format!("d{i}"), ANY_SIZE, Some(&cache))
                .await
                .unwrap();
            urls.push(url);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kept: Vec<bool> = urls.iter().map(|u| cache.entry(u).exists()).collect();
        // Over the limit, every copy not in use goes, oldest first; the
        // one just cloned was in use.
        assert_eq!(kept, vec![false, false, true]);
    }
}
