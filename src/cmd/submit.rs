//! `kumulus submit REPO [-a ARGS...] [-c FILE|JSON] [--timeout S] [--wait]
//! [--follow]`: submits a job. `--wait` shows its state and elapsed time
//! while it runs (on a terminal), then the result, and exits with the job's
//! exit code; `--follow` streams its logs meanwhile.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use kumulus_client::{NewJob, Session};

use super::remote::{exit_code, json, line, session, Outcome, Remote};

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The git repository (a URL, or a path where the server allows them).
    pub repo: String,
    /// The start script's arguments.
    #[arg(short = 'a', long = "args", num_args = 1..)]
    pub args: Vec<String>,
    /// The job's config.json: a file, or JSON text.
    #[arg(short, long)]
    pub config: Option<String>,
    /// Seconds the job may run.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Wait for the job to end; exit with its exit code.
    #[arg(long)]
    pub wait: bool,
    /// Stream the job's logs until it ends (implies --wait).
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// `-c`: JSON text as it is, else a file's contents (JSON if it parses).
fn config(value: &str) -> Result<serde_json::Value, String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(value) {
        return Ok(v);
    }
    let text = std::fs::read_to_string(value)
        .map_err(|e| format!("-c {value}: neither JSON nor a file that can be read ({e})"))?;
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

pub async fn run(args: &SubmitArgs) -> Result<Outcome, String> {
    let s = session(&args.remote).await?;
    let job = NewJob {
        config: args.config.as_deref().map(config).transpose()?,
        timeout_secs: args.timeout,
        ..NewJob::repo(&args.repo).args(args.args.iter().cloned())
    };
    let accepted = s.submit(&job).await.map_err(|e| e.to_string())?;
    if !(args.wait || args.follow) {
        return Ok(Outcome::ok(if args.remote.json {
            json(&accepted)
        } else {
            accepted.id
        }));
    }
    let done = if args.follow {
        super::logs::stream(&s, &accepted.id, true, args.remote.json).await?
    } else {
        wait(&s, &accepted.id).await?
    };
    Ok(Outcome {
        text: if args.remote.json {
            json(&done)
        } else {
            line(&done)
        },
        code: exit_code(&done),
    })
}

/// Polls until the job ends, with a spinner on a terminal.
pub async fn wait(s: &Session, id: &str) -> Result<kumulus_client::Job, String> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let frames = ['|', '/', '-', '\\'];
    let mut i = 0;
    loop {
        let job = s.job(id).await.map_err(|e| e.to_string())?;
        if job.is_terminal() {
            if tty {
                eprint!("\r\x1b[K");
            }
            return Ok(job);
        }
        if tty {
            eprint!(
                "\r\x1b[K{} {} {} ({:.0} s)",
                frames[i % frames.len()],
                id,
                job.state,
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
