//! The Kumori driver: the worker role's count is the deployment manifest's
//! `scale: detail: worker: hsize: N` ([`super::cue`] edits it, byte for
//! byte), applied with `kam ctl update deployment NAME --deployment DIR
//! --yes --wait 5m` (or `kumorictl update deployment ...`), and read back
//! from the platform with `describe deployment NAME`.
//!
//! - One update at a time, across processes too (a lock file beside the
//!   manifest): the autoscaler and `kumulus scale` never interleave.
//! - A failed update puts the manifest back as it was.
//! - An answer that says the session is not (or no longer) logged in makes
//!   it log in (`login USER`, the password on stdin, from a secret: no
//!   terminal needed) and try once more.
//! - The count it reports is the platform's, parsed from `describe`
//!   ([`parse_describe`]); where that cannot be run or read, the manifest's,
//!   with a warning that says so. A platform count that differs from the
//!   manifest's (someone else scaled it) is logged and believed.

use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use kumulus_core::config::Secret;
use kumulus_core::ports::{PortError, PortResult, ScalingPlatform};

use super::cue;

/// Which Kumori command-line tool, and how its subcommands are spelt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cli {
    /// `kam ctl <subcommand>`: current projects.
    Kam,
    /// `kumorictl <subcommand>`: older ones.
    Kumorictl,
}

impl Cli {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "kam" => Ok(Self::Kam),
            "kumorictl" => Ok(Self::Kumorictl),
            other => Err(format!("{other}: expected kam or kumorictl")),
        }
    }

    fn program(self) -> &'static str {
        match self {
            Self::Kam => "kam",
            Self::Kumorictl => "kumorictl",
        }
    }

    fn prefix(self) -> &'static [&'static str] {
        match self {
            Self::Kam => &["ctl"],
            Self::Kumorictl => &[],
        }
    }
}

/// Logging in without a terminal.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: Secret,
}

pub struct KumoriDriver {
    pub cli: Cli,
    /// The program to run; empty for the tool's name on PATH.
    pub program: PathBuf,
    /// The deployment manifest (`kumori/deployments/system/manifest.cue`).
    pub manifest: PathBuf,
    pub deployment: String,
    /// The role to scale (`worker`).
    pub role: String,
    /// `--wait` of the update (`5m`).
    pub wait: String,
    pub login: Option<Login>,
    /// Time limit of one call of the tool.
    pub timeout: Duration,
    /// Counts it applies, at least and at most.
    pub bounds: (u32, u32),
    pub(crate) busy: tokio::sync::Mutex<()>,
}

impl KumoriDriver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cli: Cli,
        program: PathBuf,
        manifest: PathBuf,
        deployment: String,
        role: String,
        wait: String,
        login: Option<Login>,
        timeout: Duration,
        bounds: (u32, u32),
    ) -> Self {
        Self {
            cli,
            program,
            manifest,
            deployment,
            role,
            wait,
            login,
            timeout,
            bounds,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    fn program(&self) -> PathBuf {
        if self.program.as_os_str().is_empty() {
            PathBuf::from(self.cli.program())
        } else {
            self.program.clone()
        }
    }

    fn args(&self, sub: &[&str]) -> Vec<String> {
        self.cli
            .prefix()
            .iter()
            .chain(sub)
            .map(|s| s.to_string())
            .collect()
    }

    /// The update's arguments, exactly.
    pub fn update_args(&self) -> Vec<String> {
        let dir = self
            .manifest
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| ".".into());
        self.args(&[
            "update",
            "deployment",
            &self.deployment,
            "--deployment",
            &dir,
            "--yes",
            "--wait",
            &self.wait,
        ])
    }

    /// Runs the tool; after an answer that says it is not logged in, logs in
    /// and runs it once more.
    async fn call(&self, sub: Vec<String>) -> PortResult<String> {
        match run(&self.program(), &sub, None, self.timeout).await {
            Err(Failure::Auth(why)) => {
                let Some(login) = &self.login else {
                    return Err(PortError::unavailable(
                        "kumori",
                        format!("{why} (set autoscaler.kumori_user and the password to log in by itself)"),
                    ));
                };
                tracing::info!(user = %login.user, "the Kumori session is not logged in; logging in");
                let args = self.args(&["login", &login.user]);
                let password = format!("{}\n", login.password.expose());
                run(
                    &self.program(),
                    &args,
                    Some(password.as_bytes()),
                    self.timeout,
                )
                .await
                .map_err(|e| PortError::unavailable("kumori", format!("cannot log in: {e}")))?;
                run(&self.program(), &sub, None, self.timeout)
                    .await
                    .map_err(|e| PortError::unavailable("kumori", e.to_string()))
            }
            Err(e) => Err(PortError::unavailable("kumori", e.to_string())),
            Ok(out) => Ok(out),
        }
    }

    async fn manifest_count(&self) -> PortResult<(String, u32)> {
        let text = tokio::fs::read_to_string(&self.manifest)
            .await
            .map_err(|e| {
                PortError::Internal(format!("cannot read {}: {e}", self.manifest.display()))
            })?;
        let n = cue::find_count(&text, &self.role)
            .map_err(|e| PortError::Internal(format!("{}: {e}", self.manifest.display())))?
            .value;
        Ok((text, n))
    }

    /// The count the platform runs, if `describe` says.
    async fn platform_count(&self) -> Result<u32, String> {
        let out = self
            .call(self.args(&["describe", "deployment", &self.deployment]))
            .await
            .map_err(|e| e.to_string())?;
        parse_describe(&out, &self.role).ok_or_else(|| {
            format!(
                "no `{}` instance count in its `describe deployment` output",
                self.role
            )
        })
    }
}

/// Why a call of the tool failed.
#[derive(Debug)]
enum Failure {
    /// It says it is not logged in, or its session expired.
    Auth(String),
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auth(s) | Self::Other(s) => f.write_str(s),
        }
    }
}

/// Whether a failed call's output says the session is not logged in.
fn is_auth_failure(output: &str) -> bool {
    let o = output.to_ascii_lowercase();
    [
        "unauthorized",
        "unauthenticated",
        "not logged in",
        "please log in",
        "login required",
        "token expired",
        "expired token",
        "token has expired",
        "401",
    ]
    .iter()
    .any(|m| o.contains(m))
}

/// Runs `program args` (no shell), `stdin` on its input, within `timeout`;
/// its stdout when it succeeds.
async fn run(
    program: &Path,
    args: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<String, Failure> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .kill_on_drop(true)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let name = program.display().to_string();
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::Other(format!("cannot run {name}: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input).await;
        drop(pipe);
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| Failure::Other(format!("{name} took longer than {timeout:?}")))?
        .map_err(|e| Failure::Other(format!("cannot run {name}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .chain(stdout.lines())
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    let why = format!("{name} {} failed ({}): {last}", args.join(" "), out.status);
    if is_auth_failure(&stderr) || is_auth_failure(&stdout) {
        Err(Failure::Auth(why))
    } else {
        Err(Failure::Other(why))
    }
}

/// The instance count of `role` in the output of `describe deployment`:
/// JSON (the role's object with `hsize`, `instances` or `replicas`, a number
/// or a list of instances), or text where the role's line, or the lines
/// after it, say `hsize`, `instances` or `replicas` and a number. `None`
/// where it says nothing clear.
pub fn parse_describe(output: &str, role: &str) -> Option<u32> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(output) {
        return from_json(&v, role);
    }
    let keys = ["hsize", "instances", "replicas"];
    let lines: Vec<&str> = output.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if !words(line).iter().any(|w| w == role) {
            continue;
        }
        // The role's own line, then its block (the more indented lines after it).
        let indent = line.len() - line.trim_start().len();
        let block = std::iter::once(*line).chain(
            lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied(),
        );
        for l in block {
            let w = words(l);
            for (j, word) in w.iter().enumerate() {
                if keys.contains(&word.to_ascii_lowercase().as_str()) {
                    if let Some(n) = w.get(j + 1).and_then(|n| n.parse().ok()) {
                        return Some(n);
                    }
                }
            }
        }
    }
    None
}

fn words(line: &str) -> Vec<String> {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn from_json(v: &serde_json::Value, role: &str) -> Option<u32> {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if let Some(r) = map.get(role) {
                for key in ["hsize", "instances", "replicas"] {
                    match r.get(key) {
                        Some(Value::Number(n)) => return n.as_u64().map(|n| n as u32),
                        Some(Value::Array(items)) => return Some(items.len() as u32),
                        _ => {}
                    }
                }
                if let Some(n) = r.as_u64() {
                    return Some(n as u32);
                }
            }
            map.values().find_map(|x| from_json(x, role))
        }
        Value::Array(items) => items.iter().find_map(|x| from_json(x, role)),
        _ => None,
    }
}

/// Holds the lock file beside the manifest while it lives.
struct FileLock(#[allow(dead_code)] std::fs::File);

async fn lock_file(manifest: &Path, timeout: Duration) -> PortResult<FileLock> {
    let path = manifest.with_extension("cue.lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| PortError::Internal(format!("cannot open {}: {e}", path.display())))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(FileLock(file)),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => {
                    return Err(PortError::unavailable(
                        "kumori",
                        format!("another update holds {}: {e}", path.display()),
                    ))
                }
            }
        }
    })
    .await
    .map_err(|e| PortError::Internal(e.to_string()))?
}

#[async_trait]
impl ScalingPlatform for KumoriDriver {
    /// What `describe` says runs (the manifest's count where it cannot).
    fn counts_running(&self) -> bool {
        true
    }

    async fn current(&self) -> PortResult<u32> {
        let (_, in_file) = self.manifest_count().await?;
        match self.platform_count().await {
            Ok(n) => {
                if n != in_file {
                    tracing::warn!(
                        platform = n,
                        manifest = in_file,
                        "the platform runs another worker count than the manifest says (scaled by someone else?); going by the platform's"
                    );
                }
                Ok(n)
            }
            Err(why) => {
                tracing::warn!(%why, manifest = in_file, "cannot read the worker count from the platform; going by the manifest's");
                Ok(in_file)
            }
        }
    }

    async fn apply(&self, desired: u32) -> PortResult<()> {
        let (min, max) = self.bounds;
        if !(min..=max).contains(&desired) {
            return Err(PortError::Internal(format!(
                "{desired} workers is outside the configured bounds ({min} to {max})"
            )));
        }
        let _one = self.busy.lock().await;
        let _lock = lock_file(&self.manifest, self.timeout).await?;
        let (text, _) = self.manifest_count().await?;
        let new = cue::set_count(&text, &self.role, desired)
            .map_err(|e| PortError::Internal(format!("{}: {e}", self.manifest.display())))?;
        write_atomically(&self.manifest, &new).await?;
        if let Err(e) = self.call(self.update_args()).await {
            // Put the manifest back: it must say what runs.
            write_atomically(&self.manifest, &text).await?;
            return Err(e);
        }
        Ok(())
    }
}

async fn write_atomically(path: &Path, text: &str) -> PortResult<()> {
    let tmp = path.with_extension("cue.kumulus-tmp");
    tokio::fs::write(&tmp, text)
        .await
        .map_err(|e| PortError::Internal(format!("cannot write {}: {e}", tmp.display())))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| PortError::Internal(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platforms_count_is_read_from_describe() {
        let cases: [(&str, Option<u32>); 9] = [
            (
                r#"{"roles": {"frontend": {"hsize": 1}, "worker": {"hsize": 4}}}"#,
                Some(4),
            ),
            (
                r#"{"deployment": {"roles": [{"worker": {"instances": ["a", "b", "c"]}}]}}"#,
                Some(3),
            ),
            (r#"{"worker": {"replicas": 2}}"#, Some(2)),
            (
                "Deployment kumulus\nRoles:\n  frontend  instances: 1\n  worker    instances: 5\n",
                Some(5),
            ),
            (
                "role: worker\n  hsize: 6\nrole: frontend\n  hsize: 1\n",
                Some(6),
            ),
            ("worker:\n    Instances: 7 (7 ready)\n", Some(7)),
            // Another role's count is not the worker's.
            ("frontend  instances: 1\nworkers   instances: 9\n", None),
            (r#"{"frontend": {"hsize": 1}}"#, None),
            ("nothing here", None),
        ];
        for (out, want) in cases {
            assert_eq!(parse_describe(out, "worker"), want, "{out}");
        }
    }

    #[test]
    fn auth_failures_are_told_from_others() {
        assert!(is_auth_failure("Error: unauthorized (401)"));
        assert!(is_auth_failure("you are not logged in; run kam ctl login"));
        assert!(is_auth_failure("Token has expired"));
        assert!(!is_auth_failure("deployment kumulus not found"));
    }

    #[test]
    fn each_tool_spells_the_update_its_way() {
        let d = |cli| {
            KumoriDriver::new(
                cli,
                PathBuf::new(),
                PathBuf::from("/m/deployment/manifest.cue"),
                "kumulus".into(),
                "worker".into(),
                "5m".into(),
                None,
                Duration::from_secs(1),
                (1, 10),
            )
        };
        assert_eq!(
            d(Cli::Kam).update_args().join(" "),
            "ctl update deployment kumulus --deployment /m/deployment --yes --wait 5m"
        );
        assert_eq!(d(Cli::Kam).program(), PathBuf::from("kam"));
        assert_eq!(
            d(Cli::Kumorictl).update_args().join(" "),
            "update deployment kumulus --deployment /m/deployment --yes --wait 5m"
        );
        assert!(Cli::parse("kubectl").is_err());
    }
}
