//! Platform drivers: how a decision becomes a number of running workers.
//!
//! - [`DryRun`]: only logs (the seed's behaviour).
//! - [`CommandDriver`]: runs an executable with the desired count as its
//!   last argument (for platforms we do not know).
//! - [`KumoriDriver`]: rewrites the worker role's `hsize` in the deployment
//!   manifest and runs `kumorictl update deployment ...`, reading the count
//!   back from the manifest.
//! - [`process::ProcessDriver`]: starts and stops real worker processes on
//!   this machine.
//!
//! No driver passes anything through a shell. Only the process driver sees
//! the workers that run; the others know the count they asked for, and
//! say so ([`ScalingPlatform::counts_running`]).

pub mod process;

use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::process::Command;

use kumulus_core::ports::{PortError, PortResult, ScalingPlatform};

/// Logs the decisions and remembers the count, changing nothing.
pub struct DryRun {
    current: AtomicU32,
}

impl DryRun {
    pub fn new(initial: u32) -> Self {
        Self {
            current: AtomicU32::new(initial),
        }
    }
}

#[async_trait]
impl ScalingPlatform for DryRun {
    /// It knows the count it asked for, not what runs.
    fn counts_running(&self) -> bool {
        false
    }

    async fn current(&self) -> PortResult<u32> {
        Ok(self.current.load(Ordering::SeqCst))
    }

    async fn apply(&self, desired: u32) -> PortResult<()> {
        let from = self.current.swap(desired, Ordering::SeqCst);
        tracing::info!(from, to = desired, "dry run: would scale the workers");
        Ok(())
    }
}

/// Runs `program args... <desired>`; the count it last applied is the current one.
pub struct CommandDriver {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    current: AtomicU32,
}

impl CommandDriver {
    pub fn new(program: PathBuf, args: Vec<String>, timeout: Duration, initial: u32) -> Self {
        Self {
            program,
            args,
            timeout,
            current: AtomicU32::new(initial),
        }
    }
}

/// Runs a command (no shell) within `timeout`; its output goes to the log.
async fn run(program: &PathBuf, args: &[String], timeout: Duration) -> PortResult<()> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| {
            PortError::unavailable(
                "platform",
                format!("{} took longer than {timeout:?}", program.display()),
            )
        })?
        .map_err(|e| {
            PortError::unavailable("platform", format!("cannot run {}: {e}", program.display()))
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(PortError::unavailable(
            "platform",
            format!(
                "{} failed ({}): {}",
                program.display(),
                out.status,
                stderr.lines().last().unwrap_or("").trim()
            ),
        ))
    }
}

#[async_trait]
impl ScalingPlatform for CommandDriver {
    /// It knows the count it asked for, not what runs.
    fn counts_running(&self) -> bool {
        false
    }

    async fn current(&self) -> PortResult<u32> {
        Ok(self.current.load(Ordering::SeqCst))
    }

    async fn apply(&self, desired: u32) -> PortResult<()> {
        let mut args = self.args.clone();
        args.push(desired.to_string());
        run(&self.program, &args, self.timeout).await?;
        self.current.store(desired, Ordering::SeqCst);
        Ok(())
    }
}

/// Scales the worker role of a Kumori deployment.
pub struct KumoriDriver {
    /// The deployment manifest (`.../deployment/manifest.cue`).
    pub manifest: PathBuf,
    /// The role to scale (`worker`).
    pub role: String,
    /// The command, `{deployment}` and `{dir}` replaced (the configuration's
    /// `autoscaler.kumori_command`).
    pub command: Vec<String>,
    pub deployment: String,
    pub timeout: Duration,
}

/// The `<role>: hsize: N` line of a manifest, and N.
fn find_hsize<'a>(text: &'a str, role: &str) -> Result<(usize, &'a str, u32), String> {
    let prefix = format!("{role}:");
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix(&prefix) else {
            continue;
        };
        let Some(n) = rest.trim_start().strip_prefix("hsize:") else {
            continue;
        };
        let n = n.trim().trim_end_matches(',');
        let value: u32 = n
            .parse()
            .map_err(|_| format!("line {}: hsize `{n}` is not a count", i + 1))?;
        if found.is_some() {
            return Err(format!("more than one `{role}: hsize:` line"));
        }
        found = Some((i, line, value));
    }
    found.ok_or_else(|| format!("no `{role}: hsize: N` line in the manifest"))
}

/// The manifest with the role's instance count set to `n`; everything
/// else byte for byte as it was.
pub fn rewrite_hsize(text: &str, role: &str, n: u32) -> Result<String, String> {
    let (index, line, _) = find_hsize(text, role)?;
    let indent = &line[..line.len() - line.trim_start().len()];
    let trailing = if line.trim_end().ends_with(',') {
        ","
    } else {
        ""
    };
    let new_line = format!("{indent}{role}: hsize: {n}{trailing}");
    let mut out: Vec<&str> = text.lines().collect();
    out[index] = &new_line;
    let mut s = out.join("\n");
    if text.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

/// The role's instance count in a manifest.
pub fn read_hsize(text: &str, role: &str) -> Result<u32, String> {
    find_hsize(text, role).map(|(_, _, n)| n)
}

#[async_trait]
impl ScalingPlatform for KumoriDriver {
    /// It knows the count it asked for, not what runs.
    fn counts_running(&self) -> bool {
        false
    }

    async fn current(&self) -> PortResult<u32> {
        let text = tokio::fs::read_to_string(&self.manifest)
            .await
            .map_err(|e| {
                PortError::Internal(format!("cannot read {}: {e}", self.manifest.display()))
            })?;
        read_hsize(&text, &self.role).map_err(PortError::Internal)
    }

    async fn apply(&self, desired: u32) -> PortResult<()> {
        let text = tokio::fs::read_to_string(&self.manifest)
            .await
            .map_err(|e| {
                PortError::Internal(format!("cannot read {}: {e}", self.manifest.display()))
            })?;
        let new = rewrite_hsize(&text, &self.role, desired).map_err(PortError::Internal)?;
        let tmp = self.manifest.with_extension("cue.kumulus-tmp");
        tokio::fs::write(&tmp, &new)
            .await
            .map_err(|e| PortError::Internal(format!("cannot write {}: {e}", tmp.display())))?;
        tokio::fs::rename(&tmp, &self.manifest).await.map_err(|e| {
            PortError::Internal(format!("cannot write {}: {e}", self.manifest.display()))
        })?;
        let dir = self
            .manifest
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| ".".into());
        let argv: Vec<String> = self
            .command
            .iter()
            .map(|a| {
                a.replace("{deployment}", &self.deployment)
                    .replace("{dir}", &dir)
            })
            .collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(PortError::Internal("the kumori command is empty".into()));
        };
        if let Err(e) = run(&PathBuf::from(program), args, self.timeout).await {
            // Put the manifest back: it must say what runs.
            let _ = tokio::fs::write(&self.manifest, &text).await;
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str =
        "config: {\n\tscale: detail: {\n\t\tfrontend: hsize: 1\n\t\tworker: hsize: 2\n\t}\n}\n";

    #[test]
    fn rewrites_only_the_role_count() {
        let out = rewrite_hsize(MANIFEST, "worker", 7).unwrap();
        assert_eq!(
            out,
            MANIFEST.replace("worker: hsize: 2", "worker: hsize: 7")
        );
        assert_eq!(read_hsize(&out, "worker").unwrap(), 7);
        assert_eq!(read_hsize(&out, "frontend").unwrap(), 1);
        assert!(rewrite_hsize(MANIFEST, "db", 1).is_err());
        assert!(read_hsize("worker: hsize: many\n", "worker").is_err());
        assert!(read_hsize("worker: hsize: 1\nworker: hsize: 2\n", "worker").is_err());
    }

    #[test]
    fn the_shipped_manifest_has_a_worker_count() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kumori/deployment/manifest.cue");
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(read_hsize(&text, "worker").unwrap(), 2);
    }
}
