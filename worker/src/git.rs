//! Cloning a stranger's repository without trusting it: the URL is checked
//! again here, passed after `--`, only the allowed transports are enabled,
//! no hooks, no system or user git config, no prompts, a time limit.

use std::path::Path;
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
    #[error("cancelled while cloning")]
    Cancelled,
}

/// Shallow-clones `url` into `dest`. `scratch` holds git's home and logs.
pub async fn clone(
    url: &str,
    policy: &RepoPolicy,
    dest: &Path,
    scratch: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), CloneError> {
    let location = check_repo_url(url, policy).map_err(CloneError::Refused)?;
    // A local path becomes a file:// URL so that --depth applies to it too.
    let source = match location {
        RepoLocation::Local if url.starts_with('/') => format!("file://{url}"),
        _ => url.to_string(),
    };
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
    cmd.args([
        "clone",
        "--quiet",
        "--depth",
        "1",
        "--single-branch",
        "--no-tags",
        "--recurse-submodules=no",
        "--",
    ])
    .arg(&source)
    .arg(dest);

    let out = scratch.join("clone.out");
    let err = scratch.join("clone.err");
    let exit = process::run(cmd, &out, &err, 64 * 1024, timeout, cancel, None)
        .await
        .map_err(|e| CloneError::Failed(format!("could not start git: {e}")))?;
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
        Exit::TimedOut => Err(CloneError::TimedOut(timeout.as_secs())),
        Exit::Cancelled => Err(CloneError::Cancelled),
    }
}
