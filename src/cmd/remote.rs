//! What the client commands share: the saved login (URL, user, token) in
//! the user's config folder, mode 0600; the session they call through (the
//! client crate); reading a password; and how they answer (text or JSON,
//! and an exit code).

use serde::{Deserialize, Serialize};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use kumulus_client::{Client, ClientError, Session};

/// A command's answer: what to print, and the exit code.
pub struct Outcome {
    pub text: String,
    pub code: u8,
}

impl Outcome {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            code: 0,
        }
    }
}

/// Options every client command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Remote {
    /// The Kumulus to talk to (default: the one you logged in to).
    #[arg(long, env = "KUMULUS_URL")]
    pub url: Option<String>,
    /// Print JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// The saved login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub url: String,
    pub user: String,
    pub token: String,
}

/// Where the login is kept: `$KUMULUS_CREDENTIALS`, else
/// `$XDG_CONFIG_HOME/kumulus/credentials.json`, else
/// `~/.config/kumulus/credentials.json`.
pub fn saved_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KUMULUS_CREDENTIALS") {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?).join(".config"),
    };
    Ok(base.join("kumulus").join("credentials.json"))
}

pub fn load_saved() -> Result<Option<Saved>, String> {
    let path = saved_path()?;
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e} (log in again)", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Saves the login, readable by its owner only.
pub fn save(saved: &Saved) -> Result<PathBuf, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = saved_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(saved).unwrap_or_default())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// A password: from the terminal without echo, or one line of stdin when
/// that is not a terminal.
pub fn read_password(prompt: &str) -> Result<String, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let before = tcgetattr(&stdin).map_err(|e| format!("cannot read the terminal: {e}"))?;
    let mut quiet = before.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(|e| e.to_string())?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &before);
    eprintln!();
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The session of the saved login (for `remote.url`, if given). A token
/// the server no longer takes is renewed by logging in again, asking for
/// the password on a terminal.
pub async fn session(remote: &Remote) -> Result<Session, String> {
    let saved = load_saved()?;
    let url = remote
        .url
        .clone()
        .or_else(|| saved.as_ref().map(|s| s.url.clone()))
        .ok_or("not logged in: run `kumulus login URL --user NAME` first")?;
    let client = Client::new(&url).map_err(|e| e.to_string())?;
    let Some(saved) = saved.filter(|s| s.url == url) else {
        return Err(format!(
            "not logged in to {url}: run `kumulus login {url} --user NAME`"
        ));
    };
    let session = client.session(saved.token.clone());
    // One cheap call tells whether the token still works.
    match session.page(None, 1, None).await {
        Err(ClientError::Api { status, .. }) if status.as_u16() == 401 => {
            if !std::io::stdin().is_terminal() {
                return Err(format!(
                    "the saved login to {url} has expired: run `kumulus login {url} --user {}`",
                    saved.user
                ));
            }
            eprintln!(
                "kumulus: the login to {url} has expired; logging in again as {}",
                saved.user
            );
            let password = read_password(&format!("password for {}: ", saved.user))?;
            let fresh = client
                .login(&saved.user, &password)
                .await
                .map_err(|e| e.to_string())?;
            save(&Saved {
                url: url.clone(),
                user: saved.user.clone(),
                token: fresh.token().to_string(),
            })?;
            Ok(fresh)
        }
        Err(e) => Err(e.to_string()),
        Ok(_) => Ok(session),
    }
}

/// `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A job's one-line summary.
pub fn line(job: &kumulus_client::Job) -> String {
    let took = job
        .elapsed_secs
        .map(|s| format!(" in {s:.1} s"))
        .unwrap_or_default();
    let code = job
        .exit_code
        .map(|c| format!(", exit code {c}"))
        .unwrap_or_default();
    let error = job
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    format!("{} {}{took}{code}{error}", job.id, job.state)
}

/// A job's exit code for the shell: its own, or 1 if it failed without
/// one (a time limit, an infrastructure failure, a cancellation).
pub fn exit_code(job: &kumulus_client::Job) -> u8 {
    match (job.state, job.exit_code) {
        (kumulus_client::JobState::Succeeded, _) => 0,
        (_, Some(c)) if (1..=255).contains(&c) => c as u8,
        _ => 1,
    }
}
