//! The sandbox a job runs in: bubblewrap, where installed. The job sees the
//! system read-only and its own work folder read-write, and nothing of the
//! worker: no environment, no data folder (other jobs, the job store, the
//! token key), no home folder, its own /tmp, its own PID namespace, an
//! unprivileged user, no capabilities, and no network unless
//! `worker.network` is on. When the sandbox dies, everything in it dies.
//! A root worker starts it as `worker.job_uid` ([`crate::identity`]), so
//! the job's user namespace maps its uid to that unprivileged user, never
//! to root.

use std::path::{Path, PathBuf};
use tokio::process::Command;

/// How jobs are isolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// bubblewrap, with the folders and files to hide from jobs.
    Bwrap { hide: Vec<PathBuf>, network: bool },
    /// None: the job runs as the worker's user (only its environment is cleared).
    None,
}

/// Whether bubblewrap can run here (as `user`, where jobs run as one).
pub fn bwrap_works(user: Option<crate::identity::JobUser>) -> bool {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("bwrap");
    if let Some(u) = user {
        cmd.uid(u.uid).gid(u.gid);
    }
    cmd.args([
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--",
        "true",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .status()
    .map(|s| s.success())
    .unwrap_or(false)
}

impl Sandbox {
    /// `program args` in the sandbox, working in `cwd`, with the `writable`
    /// folders (the job's own, its owner's npm cache) writable and `env` as
    /// its whole environment.
    pub fn command(
        &self,
        program: &str,
        args: &[String],
        cwd: &Path,
        writable: &[&Path],
        env: &[(&str, String)],
    ) -> Command {
        match self {
            Sandbox::None => {
                let mut cmd = Command::new(program);
                cmd.args(args).current_dir(cwd).env_clear();
                for (k, v) in env {
                    cmd.env(k, v);
                }
                cmd
            }
            Sandbox::Bwrap { hide, network } => {
                let mut cmd = Command::new("bwrap");
                cmd.env_clear();
                cmd.args([
                    "--unshare-user",
                    "--unshare-ipc",
                    "--unshare-pid",
                    "--unshare-uts",
                    "--unshare-cgroup-try",
                ]);
                if !network {
                    cmd.arg("--unshare-net");
                }
                cmd.args(["--die-with-parent", "--new-session", "--cap-drop", "ALL"])
                    .args(["--uid", "65534", "--gid", "65534"])
                    .args(["--ro-bind", "/", "/"])
                    .args(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
                for path in hide {
                    if path.is_dir() {
                        cmd.arg("--tmpfs").arg(path);
                    } else if path.exists() {
                        // A file (the worker's configuration): seen empty.
                        cmd.arg("--ro-bind").arg("/dev/null").arg(path);
                    }
                }
                for dir in writable {
                    cmd.arg("--bind").arg(dir).arg(dir);
                }
                cmd.arg("--chdir").arg(cwd).arg("--clearenv");
                for (k, v) in env {
                    cmd.arg("--setenv").arg(k).arg(v);
                }
                cmd.arg("--").arg(program).args(args);
                cmd
            }
        }
    }
}
