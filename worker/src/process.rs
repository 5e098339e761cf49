//! Running a child process as a job: its own process group, stdout and
//! stderr pumped into files up to a limit, and a time limit or a
//! cancellation that kills the whole group.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use kumulus_core::logs::LogStream;

/// How a process ended.
#[derive(Debug)]
pub enum Exit {
    /// It exited by itself (or was killed by a signal nobody here sent).
    Exited(ExitStatus),
    /// It ran past its time limit and was killed.
    TimedOut,
    /// It was cancelled and killed.
    Cancelled,
}

/// What holds a process: its limits, and the user it becomes; and where
/// its output also goes, live.
#[derive(Default, Clone, Copy)]
pub struct Confine<'a> {
    pub limits: Option<&'a crate::limits::Confinement>,
    pub user: Option<crate::identity::JobUser>,
    pub live: Option<&'a crate::live::Tap>,
}

/// Time between SIGTERM and SIGKILL when a job is stopped.
const KILL_GRACE: Duration = Duration::from_millis(1500);

/// Starts `cmd` in a process group of its own, with stdout and stderr written
/// to the given files (each cut at `log_limit` bytes), and waits for it
/// within `timeout` or until `cancel`. The whole group is gone when this returns.
pub async fn run(
    mut cmd: Command,
    stdout_path: &Path,
    stderr_path: &Path,
    log_limit: u64,
    timeout: Duration,
    cancel: &CancellationToken,
    confine: Confine<'_>,
) -> std::io::Result<Exit> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let held = match confine.limits {
        Some(c) => c.enter_on_spawn(&mut cmd)?,
        None => Vec::new(),
    };
    // Last, after the cgroups were joined with the worker's rights.
    crate::identity::seal(&mut cmd, confine.user);
    let mut child = cmd.spawn()?;
    drop(held);
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let out = tokio::spawn(pump(
        child.stdout.take(),
        stdout_path.to_owned(),
        log_limit,
        LogStream::Stdout,
        confine.live.cloned(),
    ));
    let err = tokio::spawn(pump(
        child.stderr.take(),
        stderr_path.to_owned(),
        log_limit,
        LogStream::Stderr,
        confine.live.cloned(),
    ));

    let exit = tokio::select! {
        status = child.wait() => Exit::Exited(status?),
        _ = tokio::time::sleep(timeout) => Exit::TimedOut,
        _ = cancel.cancelled() => Exit::Cancelled,
    };
    if !matches!(exit, Exit::Exited(_)) {
        stop_group(&mut child, pgid).await;
    }
    // The job is over: whatever it left running in its group goes too, so
    // nothing outlives the job or holds its log pipes open.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    for pump in [out, err] {
        match tokio::time::timeout(Duration::from_secs(5), pump).await {
            Ok(Ok(result)) => result?,
            Ok(Err(join)) => return Err(std::io::Error::other(join)),
            Err(_) => tracing::warn!("log pump did not finish after the job ended"),
        }
    }
    Ok(exit)
}

/// SIGTERM to the group, then SIGKILL if it has not exited in time.
async fn stop_group(child: &mut Child, pgid: Option<Pid>) {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGTERM);
    }
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let _ = child.kill().await;
    }
}

/// Copies a stream into a file (and to `live`), up to `limit` bytes; the
/// rest is read and dropped (so the child never blocks on a full pipe) and a
/// marker line says so.
async fn pump<R: AsyncRead + Unpin>(
    stream: Option<R>,
    path: std::path::PathBuf,
    limit: u64,
    which: LogStream,
    live: Option<crate::live::Tap>,
) -> std::io::Result<()> {
    let mut file = tokio::fs::File::create(&path).await?;
    let Some(mut stream) = stream else {
        return Ok(());
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut written: u64 = 0;
    let mut dropped: u64 = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let room = limit.saturating_sub(written) as usize;
        let keep = n.min(room);
        if keep > 0 {
            file.write_all(&buf[..keep]).await?;
            written += keep as u64;
            if let Some(tap) = &live {
                tap.offer(which, &buf[..keep]);
            }
        }
        dropped += (n - keep) as u64;
    }
    if dropped > 0 {
        let marker = format!(
            "\n[kumulus: {} cut at {limit} bytes; {dropped} more bytes were dropped]\n",
            which.as_str()
        );
        file.write_all(marker.as_bytes()).await?;
    }
    file.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn captures_and_cuts_logs() {
        let dir = tempfile::tempdir().unwrap();
        let (o, e) = (dir.path().join("o"), dir.path().join("e"));
        let exit = run(
            sh("head -c 5000 /dev/zero | tr '\\0' a; echo oops >&2; exit 3"),
            &o,
            &e,
            1024,
            Duration::from_secs(10),
            &CancellationToken::new(),
            Confine::default(),
        )
        .await
        .unwrap();
        assert!(matches!(exit, Exit::Exited(s) if s.code() == Some(3)));
        let out = std::fs::read_to_string(&o).unwrap();
        assert!(out.starts_with(&"a".repeat(1024)));
        assert!(out.contains("cut at 1024 bytes; 3976 more bytes"), "{out}");
        assert_eq!(std::fs::read_to_string(&e).unwrap(), "oops\n");
    }

    #[tokio::test]
    async fn time_limit_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let exit = run(
            sh(&script),
            &dir.path().join("o"),
            &dir.path().join("e"),
            1024,
            Duration::from_millis(500),
            &CancellationToken::new(),
            Confine::default(),
        )
        .await
        .unwrap();
        assert!(matches!(exit, Exit::TimedOut));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep was in the group: it goes too (a signal is
        // delivered asynchronously, so give it a moment to be gone).
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(), "grandchild {pid} survived");
    }

    #[tokio::test]
    async fn cancellation_stops_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            t.cancel();
        });
        let exit = run(
            sh("sleep 30"),
            &dir.path().join("o"),
            &dir.path().join("e"),
            1024,
            Duration::from_secs(60),
            &token,
            Confine::default(),
        )
        .await
        .unwrap();
        assert!(matches!(exit, Exit::Cancelled));
    }
}
