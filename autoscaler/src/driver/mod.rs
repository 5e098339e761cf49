//! Platform drivers: how a decision becomes a number of running workers.
//!
//! - [`DryRun`]: only logs (the seed's behaviour).
//! - [`CommandDriver`]: runs an executable with the desired count as its
//!   last argument (for platforms we do not know).
//! - [`kumori::KumoriDriver`]: edits the worker role's `hsize` in the
//!   deployment manifest ([`cue`]), runs `kam ctl update deployment ...` (or
//!   `kumorictl`), and reads the count back from `describe deployment`.
//! - [`process::ProcessDriver`]: starts and stops real worker processes on
//!   this machine.
//!
//! No driver passes anything through a shell. The process and Kumori
//! drivers see the workers that run; the others know the count they asked
//! for, and say so ([`ScalingPlatform::counts_running`]).

pub mod cue;
pub mod kumori;
pub mod process;

pub use kumori::KumoriDriver;

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
